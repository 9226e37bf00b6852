"""Reward-model runs: pairs → comparison groups → `RewardModelTrainer`; judged by held-out pair accuracy."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from alignment.lifecycle import TrainingRunKind
from alignment.recipe.load import dump_recipe
from alignment.trainers.reward_model import (
    COLUMNS,
    ComparisonCollator,
    RewardModelTrainer,
    group_comparisons,
    split_heldout,
    tokenize_pairs,
    write_evaluation,
)

logger = logging.getLogger("alignment")


def group_summary(groups) -> str:
    """One line: how many comparison groups, and the forward passes they save against one pair per group."""
    sequences = sum(len(ids) for ids in groups["input_ids"])
    pairs = sum(len(p) for p in groups["pairs"])
    return (
        f"{pairs} pairs in {len(groups)} comparison groups, {sequences} distinct sequences "
        f"({sequences / max(1, 2 * pairs):.2f} of the forward passes of one pair per group)"
    )


class RewardModelRun(TrainingRunKind):
    """A one-logit sequence classifier under the Bradley–Terry loss (`method: reward_model`)."""

    checkpoint_marker = "trainer_state.json"  # the plain Trainer's last file (no objective state to add)

    def load_data(self, tokenizer) -> None:
        recipe = self.recipe
        train_pairs, heldout_pairs, self.heldout_spec = split_heldout(recipe, tokenizer)
        length = {"max_length": recipe.data.max_length, "num_proc": recipe.data.num_proc}
        self.train, dropped_train = tokenize_pairs(train_pairs, tokenizer, **length)
        self.heldout, dropped_heldout = tokenize_pairs(heldout_pairs, tokenizer, **length)
        self.dropped = {"train": dropped_train, "heldout": dropped_heldout}
        self.train_groups = group_comparisons(self.train, recipe.method.params.max_group_size)

    def print_dry_run(self) -> None:
        from alignment.data.tokenize import length_stats

        recipe = self.recipe
        print("# resolved recipe\n" + dump_recipe(recipe))
        print(f"# reward-model data: {len(self.train)} training pairs, {len(self.heldout)} held-out pairs")
        print(f"  {group_summary(self.train_groups)}")
        for name, ds in (("train", self.train), ("heldout", self.heldout)):
            for c in COLUMNS:
                lengths = torch.tensor([len(ids) for ids in ds[f"{c}_input_ids"]]).numpy()
                print(f"  {name} {c}_tokens: {length_stats(lengths)}")
        print(f"# dropped over data.max_length={recipe.data.max_length}: {self.dropped}")
        print("dry run: recipe and data are valid; nothing was trained.")

    def build_trainer(self, tokenizer, make_args):
        from transformers import set_seed

        from alignment.models import load_reward_model

        recipe = self.recipe
        logger.info("reward-model training data: %s", group_summary(self.train_groups))
        set_seed(int(recipe.training.get("seed", 0)))  # the score head is freshly initialised
        model = load_reward_model(
            recipe.model.name_or_path,
            revision=recipe.model.revision,
            trust_remote_code=recipe.model.trust_remote_code,
        )
        model.config.pad_token_id = tokenizer.pad_token_id  # the scorer pads with the tokenizer's pad token
        return RewardModelTrainer(
            model=model,
            args=make_args(),  # after the model, which then loads whole on every rank (as it always has)
            train_dataset=self.train_groups,
            eval_dataset=group_comparisons(self.heldout, recipe.method.params.max_group_size),
            data_collator=ComparisonCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            center_rewards_coefficient=recipe.method.params.center_rewards_coefficient,
        )

    def evaluate(self, trainer, tokenizer, seconds: float) -> dict[str, Any]:
        """Held-out pairs scored through the saved model (`write_evaluation`), with the run's summary."""
        del tokenizer
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        summary = {
            "num_train": len(self.train),
            "num_train_groups": len(self.train_groups),
            "dropped_over_max_length": self.dropped["train"] + self.dropped["heldout"],
            "steps": trainer.state.global_step,
            "train_loss_last": losses[-1] if losses else None,
            "train_seconds": round(seconds, 1),
            "seed": int(self.recipe.training.get("seed", 0)),
        }
        return write_evaluation(self.recipe, self.heldout, self.heldout_spec, summary)

    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        del trainer
        assert result is not None  # a reward model is always evaluated on its held-out pairs

        def fmt(value: Any) -> str:
            return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

        output_dir = self.recipe.output_dir
        print(
            f"\n== reward_model: {result['steps']} steps on {result['num_train']} pairs, output in {output_dir}"
        )
        if result["train_loss_last"] is not None:
            print(f"   last train loss {result['train_loss_last']:.4f}, {result['train_seconds']} s")
        print(
            f"   held-out accuracy {fmt(result['heldout_accuracy'])} on {result['num_heldout']} pairs; "
            f"label-noise ceiling {fmt(result['ceiling'])}; gold accuracy {fmt(result['gold_accuracy'])}"
        )
        if result["ceiling"] is not None and not math.isnan(result["ceiling"]):
            print(f"   gap to ceiling {result['ceiling'] - result['heldout_accuracy']:+.4f}")
        by_term = result.get("accuracy_by_term") or {}
        if by_term:
            cells = ", ".join(f"{t} {v['accuracy']:.2f} ({v['pairs']})" for t, v in by_term.items())
            print(f"   accuracy on pairs where a gold term differs (pairs): {cells}")
        print(f"   wrote {Path(output_dir) / 'eval.json'}")
