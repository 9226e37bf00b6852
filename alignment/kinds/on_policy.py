"""On-policy data: prompts in; every step samples from the current policy, labels and selects the samples
(the experience stage) and trains the method's own loss on them (`OnlineTrainer`)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from alignment.data.examples import load_examples
from alignment.errors import DataError, RecipeError
from alignment.files import write_json_atomic
from alignment.kinds.policy import PolicyRun
from alignment.lifecycle import print_dry_run
from alignment.sampling.base import prompt_token_ids

logger = logging.getLogger("alignment")

STATS_FILE = "online_stats.json"


def load_prompts(recipe, tokenizer, formats: tuple[str, ...]):
    """Any training format -> unique rendered prompts; prompts over `data.max_prompt_length` are dropped.

    They are dropped, not cut: the sampler tokenizes the prompt text itself, and a cut text would not
    re-tokenize to the cut ids. Returns (dataset, format, truncation report, prompt lengths before dropping).
    """
    tokenized, fmt, report = load_examples(
        recipe, tokenizer, ("prompts",) + tuple(f for f in formats if f != "prompts")
    )
    lengths = [len(ids) for ids in prompt_token_ids(tokenizer, tokenized["prompt"])]
    keep = [i for i, n in enumerate(lengths) if n <= recipe.data.max_prompt_length]
    if len(keep) < len(tokenized):
        logger.warning(
            "on-policy data: dropped %d of %d prompts longer than data.max_prompt_length=%d",
            len(tokenized) - len(keep),
            len(tokenized),
            recipe.data.max_prompt_length,
        )
        tokenized = tokenized.select(keep)
    if len(tokenized) == 0:
        raise DataError("data.train: no prompt fits data.max_prompt_length")
    return tokenized, fmt, report, lengths


def online_plan(recipe, num_prompts: int, labeller: str = "reward") -> dict[str, Any]:
    """The --dry-run numbers of an on-policy run: steps, samples per step, the sampler and the labeller."""
    t = recipe.training
    per_step = int(t.get("per_device_train_batch_size", 8)) * int(t.get("gradient_accumulation_steps", 1))
    steps = int(t.get("max_steps", -1))
    if steps <= 0:
        steps = -(-num_prompts // per_step) * int(t.get("num_train_epochs", 1))
    s = recipe.sampling
    return {
        "prompts": num_prompts,
        "prompts_per_step (per process)": per_step,
        "optimizer_steps": steps,
        "samples_per_step": per_step * s.n,
        "sampling": f"{s.backend}, n={s.n}, temperature={s.temperature}, max_new_tokens={s.max_new_tokens}",
        "labeller": f"{labeller} (reward kind={recipe.reward.kind} {recipe.reward.name_or_path or ''}".strip()
        + ")",
    }


class OnPolicyRun(PolicyRun):
    """Online DPO/IPO (`data.source: on_policy`): the offline loss on best/worst pairs of policy samples."""

    @property
    def labeller_class(self):
        """The objective's registered labeller (`alignment.experience.labellers.LABELLERS`)."""
        from alignment.experience.labellers import LABELLERS

        return LABELLERS.get(self.objective.labeller)

    def load_data(self, tokenizer) -> None:
        recipe = self.recipe
        if recipe.data.eval is not None:
            raise RecipeError("data.eval", "on-policy runs sample their own completions; use `evaluation:`")
        if recipe.sampling.n < 2:
            need = (
                "a leave-one-out baseline needs"
                if self.objective.selector == "all"
                else "on-policy pairs need"
            )
            raise RecipeError("sampling.n", f"{need} >= 2 samples per prompt, got {recipe.sampling.n}")
        if self.labeller_class.needs_reward and recipe.reward.kind == "none":
            raise RecipeError(
                "reward.kind", f"method '{recipe.method.name}' labels its samples with a reward"
            )
        self.prompts, self.format, self.report, self.lengths = load_prompts(
            recipe, tokenizer, self.spec.formats_for("on_policy")
        )

    def print_dry_run(self) -> None:
        import numpy as np

        from alignment.data.tokenize import length_stats

        stats = {"rows": len(self.prompts), "prompt_tokens": length_stats(np.asarray(self.lengths))}
        stats.update(online_plan(self.recipe, len(self.prompts), self.objective.labeller))
        print_dry_run(self.recipe, f"training data: format {self.format}", stats, self.report.summary())

    def build_trainer(self, tokenizer, make_args):
        from alignment.experience.labellers import LabellerContext
        from alignment.policy.build import build_policy
        from alignment.policy.varlen import uses_varlen
        from alignment.rewards import build_reward
        from alignment.sampling.factory import build_sampler, sampling_params_from_config
        from alignment.trainers.online import OnlineTrainer, PromptCollator

        recipe = self.recipe
        args = make_args()  # before the policy: under ZeRO-3 it loads partitioned, as the trainer expects
        # a missing reward model fails before the policy loads
        reward = build_reward(recipe.reward, device=args.device) if recipe.reward.kind != "none" else None
        model = build_policy(recipe)
        ref_model = copy.deepcopy(model) if self.mode == "copy" else None
        params = sampling_params_from_config(recipe.sampling)
        sampler = build_sampler(recipe.sampling, model, tokenizer, recipe.model.name_or_path)
        method = recipe.method.params
        labeller = self.labeller_class.from_context(
            LabellerContext(
                tokenizer=tokenizer,
                reward=reward,
                policy=model,
                reference=ref_model,
                reference_is_adapter=self.uses_adapter,
                beta=getattr(method, "beta", 0.1),
                sampling_params=params,
                reference_samples=getattr(method, "reference_samples", 16),
                batch_size=recipe.sampling.batch_size,
                cache_dir=recipe.model.reference_cache_dir,
                reward_key=json.dumps(dataclasses.asdict(recipe.reward), sort_keys=True),
                engine=sampler if recipe.sampling.backend == "vllm" else None,
            )
        )
        self.labeller = labeller
        prompts = self.prompts.remove_columns([c for c in self.prompts.column_names if c != "prompt"])
        return OnlineTrainer(
            model=model,
            args=args,
            train_dataset=prompts,
            data_collator=PromptCollator(),
            processing_class=tokenizer,
            objective=self.objective,
            reference_mode=self.mode,
            ref_model=ref_model,
            sampler=sampler,
            labeller=labeller,
            sampling_params=params,
            pack_length=None
            if uses_varlen(model)
            else (recipe.data.max_prompt_length + recipe.sampling.max_new_tokens)
            * self.objective.num_completions,
        )

    def after_training(self, trainer, seconds: float) -> None:
        if trainer.is_world_process_zero():
            write_stats(self.recipe.output_dir, trainer, seconds, getattr(self.labeller, "stats", None))

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        super().print_summary(trainer, result)
        if self.objective.selector == "all":
            print(f"   online: {trainer.totals['pairs']} prompts × {self.recipe.sampling.n} samples")
        else:
            print(
                f"   online: {trainer.totals['pairs']} pairs, {trainer.totals['ties']} tied prompts skipped"
            )


def write_stats(output_dir: str, trainer, seconds: float, labeller_stats: dict | None = None) -> None:
    """output_dir/online_stats.json: pair totals (the offline arm's `n`), the mean per-step time split (sample,
    score, train = forward and backward, sync; step = the whole optimizer step's wall time) and,
    for a labeller that prepares (CTRL's reference rollouts), how it did."""
    steps = trainer.step_seconds
    split = (
        {k: sum(s[k] for s in steps) / len(steps) for k in ("sample", "score", "train", "sync", "step")}
        if steps
        else {}
    )
    payload = {
        "steps": trainer.state.global_step,
        "pairs_total": trainer.totals["pairs"],
        "ties_total": trainer.totals["ties"],
        "weight_syncs": trainer.totals["syncs"],
        "seconds": round(seconds, 1),
        "mean_step_seconds": split,
        "step_seconds": [{k: round(v, 4) for k, v in s.items()} for s in steps],
    }
    if labeller_stats:
        payload["reference_rollouts"] = labeller_stats
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(output_dir) / STATS_FILE, payload)
