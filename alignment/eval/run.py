"""Evaluation entry points: after a training run, and `alignment eval` on any saved model."""

from __future__ import annotations

import logging
from typing import Any

from alignment.eval.gold import EvalSettings, evaluate, write_eval

logger = logging.getLogger(__name__)


def eval_prompts(spec, seed: int, *, key: str = "evaluation.prompts") -> list[str]:
    """The distinct prompts of a prompt dataset spec, in order; errors name `key` (recipe path or flag)."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec

    dataset, _ = prepare_for_method(load_dataset_spec(spec, seed=seed, key=key), ("prompts",), source=key)
    return list(dict.fromkeys(dataset["prompt"]))


def harmful_fn_for(reward_kind: str):
    if reward_kind != "gold":
        return None
    from alignment.toy.gold import is_harmful

    return is_harmful


def load_saved_policy(recipe, *, uses_adapter: bool):
    """The trained policy as saved in recipe.output_dir (the base + saved adapter for LoRA runs).

    For a ZeRO-3 run, where no rank holds the whole trained model: call it on one rank once training is
    over. The Trainer registered its DeepSpeed config globally, which would make `from_pretrained` build the
    model under `deepspeed.zero.Init`, a collective that hangs on a single rank: the config is dropped first
    (nothing after the final evaluation needs it).
    """
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from alignment.models import load_causal_lm

    unset_hf_deepspeed_config()
    if not uses_adapter:
        return load_causal_lm(
            recipe.output_dir, trust_remote_code=recipe.model.trust_remote_code, dtype=recipe.model.dtype
        )
    from peft import PeftModel

    base = load_causal_lm(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
        dtype=recipe.model.dtype,
    )
    return PeftModel.from_pretrained(base, recipe.output_dir)


def evaluate_recipe_model(recipe, model, tokenizer, *, uses_adapter: bool) -> dict[str, Any]:
    """Evaluate the trained `model` against the recipe's reference; writes output_dir/eval.json."""
    from alignment.models import load_causal_lm
    from alignment.rewards.base import build_reward

    unwrapped = getattr(model, "module", model)
    reference = (
        unwrapped
        if uses_adapter
        else load_causal_lm(
            recipe.model.name_or_path,
            revision=recipe.model.revision,
            trust_remote_code=recipe.model.trust_remote_code,
            dtype=recipe.model.dtype,
        ).to(next(unwrapped.parameters()).device)
    )
    reward_config = recipe.reward if recipe.reward.kind != "none" else type(recipe.reward)(kind="gold")
    result = evaluate(
        unwrapped,
        reference,
        tokenizer,
        eval_prompts(recipe.evaluation.prompts, recipe.evaluation.seed),
        build_reward(reward_config),
        EvalSettings.from_config(recipe.evaluation),
        reference_is_adapter=uses_adapter,
        harmful_fn=harmful_fn_for(reward_config.kind),
    )
    write_eval(result, recipe.output_dir)
    return result
