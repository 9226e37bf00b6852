"""In-context runs (URIAL): no training; the base model behind the method's in-context prefix, evaluated.

The run is the lifecycle without its training steps: the prompt file is parsed and the prefix rendered and
measured against the model's context before any model loads; then `urial_prompt.txt` (the template, with
``{prompt}`` where each query goes) and `recipe.yaml` are written, and the policy, base(y | prefix + x) with
answers cut at the method's stop strings, is evaluated exactly as a trained run is: the same prompts, judge and
reference (the plain base model), so its `eval.json` compares key for key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from alignment.errors import DataError, RecipeError
from alignment.files import write_text_atomic
from alignment.lifecycle import RunKind, print_dry_run
from alignment.methods.urial import PROMPT_FILE, parse_prompt_file


class InContextRun(RunKind):
    """URIAL: a base model with a constant in-context prefix (`alignment.methods.urial`)."""

    def load_data(self, tokenizer) -> None:
        """Parse the prompt file, render the prefix, and check that the longest evaluation query behind it,
        plus `evaluation.max_new_tokens`, fits the model's positions (read from its config: no weights)."""
        from alignment.data.prompts import apply_template, distinct_prompts

        recipe = self.recipe
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would evaluate and write the same files
            raise RecipeError(
                "method.name",
                f"a '{recipe.method.name}' run trains nothing and evaluates on one process: start it with "
                "`alignment RECIPE.yaml`, not a multi-process launch",
            )
        params, evaluation = recipe.method.params, recipe.evaluation
        self.template = parse_prompt_file(params.prompt_file, params).template(params)
        self.prefix_tokens = len(tokenizer(self.template.replace("{prompt}", ""))["input_ids"])
        queries = distinct_prompts(evaluation.prompts, evaluation.seed)[: evaluation.num_prompts]
        self.longest = max(len(ids) for ids in tokenizer(apply_template(self.template, queries))["input_ids"])
        self.positions = context_length(recipe)
        needed = self.longest + evaluation.max_new_tokens
        if self.positions is not None and needed > self.positions:
            raise DataError(
                f"method.prompt_file: the rendered prefix is {self.prefix_tokens} tokens; with the longest "
                f"evaluation query ({self.longest} tokens in all) and evaluation.max_new_tokens="
                f"{evaluation.max_new_tokens} that is {needed} positions, more than the model's "
                f"{self.positions}: lower method.k or use shorter examples"
            )

    def print_dry_run(self) -> None:
        params = self.recipe.method.params
        stats = {
            "examples (k)": params.k,
            "prefix_tokens": self.prefix_tokens,
            "longest_prompt_tokens (prefix + query)": self.longest,
            "model_positions": self.positions,
            "stop": list(params.stop_strings),
        }
        print_dry_run(self.recipe, "in-context prefix (urial_prompt.txt)", stats, "none: nothing is trained")
        print("# rendered template\n" + self.template)

    def evaluate(self, trainer, tokenizer, seconds: float) -> dict[str, Any]:
        """The base model inside the prefix against the plain base model; writes urial_prompt.txt first."""
        del trainer, seconds
        from alignment.eval.run import RecipeEvaluator
        from alignment.models import load_causal_lm

        recipe = self.recipe
        out = Path(recipe.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / PROMPT_FILE, self.template)
        evaluator = RecipeEvaluator(  # judge, prompts and reference checked before the model loads
            recipe, tokenizer, uses_adapter=False, template=self.template, stop=policy_stop(recipe)
        )
        m = recipe.model
        model = load_causal_lm(
            m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code, dtype=m.dtype
        ).to("cuda" if torch.cuda.is_available() else "cpu")
        evaluator.share_initial_model(model)  # the plain base model is the reference: the same weights
        return evaluator.final(model)

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        del trainer
        recipe = self.recipe
        print(
            f"\n== {recipe.method.name}: no training, k={recipe.method.params.k}, output in {recipe.output_dir}"
        )
        if result is not None:
            keys = ("win_rate", "gold_reward", "reference_gold_reward", "kl", "length", "harmful_rate")
            print("   eval: " + ", ".join(f"{k} {result[k]:.4g}" for k in keys if k in result))
            print(
                f"   wrote {Path(recipe.output_dir) / 'eval.json'} and {Path(recipe.output_dir) / PROMPT_FILE}"
            )


def policy_stop(recipe) -> tuple[str, ...]:
    """The stop strings a URIAL run's policy samples with: `evaluation.stop`, then the method's (by default
    the next query marker); a templated base model would otherwise write the next in-context query itself."""
    return tuple(dict.fromkeys([*recipe.evaluation.stop, *recipe.method.params.stop_strings]))


def context_length(recipe) -> int | None:
    """The model's positions from its config alone (no weights load); None when the config does not say."""
    from transformers import AutoConfig

    from alignment.models import resolve_model_path

    m = recipe.model
    config = AutoConfig.from_pretrained(
        resolve_model_path(m.name_or_path), revision=m.revision, trust_remote_code=m.trust_remote_code
    )
    return getattr(config, "max_position_embeddings", None)
