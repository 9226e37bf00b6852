"""Static data: a fixed preference dataset, the method's examples built once, reference log-probs from the
initial policy (precomputed and cached, the adapter switched off, or a frozen copy), `PreferenceTrainer`."""

from __future__ import annotations

import copy
from typing import Any

from alignment.data.examples import load_examples
from alignment.distributed import main_process_first
from alignment.kinds.policy import PolicyRun
from alignment.lifecycle import print_dry_run, training_arguments
from alignment.recipe.schema import Recipe, reference_mode


def build_context(recipe: Recipe, model, tokenizer):
    """What `Objective.build_examples` may use: D²O samples from the initial policy, BCO embeds prompts."""
    from alignment.methods.objective import BuildContext
    from alignment.sampling.factory import build_sampler

    return BuildContext(
        tokenizer=tokenizer,
        model=model,
        seed=int(recipe.training.get("seed", 0)),
        max_length=recipe.data.max_length,
        sampler_factory=lambda: build_sampler(recipe.sampling, model, tokenizer, recipe.model.name_or_path),
        sampling_config=recipe.sampling,
    )


def build_trainer(recipe, model, tokenizer, objective, mode, ref_model, train, evaluation, make_args=None):
    """`PreferenceTrainer` on packed batches of the method's examples."""
    from alignment.policy.batching import CompletionCollator
    from alignment.policy.varlen import uses_varlen
    from alignment.trainers.base import PreferenceTrainer

    # Rows of a few sequences under sdpa (its mask makes attention grow with the row); one row per batch
    # under varlen_sdpa, which attends within each sequence only (and projects completion positions only).
    pack_length = None if uses_varlen(model) else recipe.data.max_length * max(2, objective.num_completions)
    return PreferenceTrainer(
        model=model,
        args=make_args() if make_args is not None else training_arguments(recipe),
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=CompletionCollator(tokenizer.pad_token_id, packed=True, pack_length=pack_length),
        processing_class=tokenizer,
        objective=objective,
        reference_mode=mode,
        ref_model=ref_model,
    )


def prepare_static_trainer(
    recipe: Recipe, tokenizer, train, evaluation=None, make_args=None, objective=None, model=None
):
    """Policy (`model`, or built from the recipe), the method's examples, reference log-probs and the trainer;
    returns (trainer, reference mode).

    The TrainingArguments (`make_args()`, default `training_arguments(recipe)`) are made only after the
    reference log-probs: under ZeRO-3 they would make the policy load partitioned, unusable outside the
    DeepSpeed engine."""
    from alignment.policy.build import build_policy
    from alignment.recipe.schema import method_spec

    model = model if model is not None else build_policy(recipe)
    objective = objective or method_spec(recipe.method.name).objective(recipe.method.params)
    context = build_context(recipe, model, tokenizer)
    train = objective.build_examples(train, context)
    evaluation = objective.build_examples(evaluation, context) if evaluation is not None else None
    mode = reference_mode(recipe)
    ref_model = None
    if mode == "precomputed":
        from alignment.policy.reference import add_reference_logps

        cache = recipe.model.reference_cache_dir
        with main_process_first():  # one writer of the on-disk cache; the other ranks load it
            train = add_reference_logps(train, model, pad_token_id=tokenizer.pad_token_id, cache_dir=cache)
            if evaluation is not None:
                evaluation = add_reference_logps(
                    evaluation, model, pad_token_id=tokenizer.pad_token_id, cache_dir=cache
                )
    elif mode == "copy":
        ref_model = copy.deepcopy(model)
    trainer = build_trainer(
        recipe, model, tokenizer, objective, mode, ref_model, train, evaluation, make_args
    )
    return trainer, mode


class StaticRun(PolicyRun):
    """DPO, IPO, KTO, BCO, D²O on a fixed dataset (`data.source: static`)."""

    def load_data(self, tokenizer) -> None:
        recipe, formats = self.recipe, self.spec.formats
        self.train, self.format, self.report = load_examples(recipe, tokenizer, formats)
        self.eval = load_examples(recipe, tokenizer, formats, "eval")[0] if recipe.data.eval else None

    def print_dry_run(self) -> None:
        from alignment.data.tokenize import dataset_statistics

        stats: dict[str, Any] = dataset_statistics(self.train, self.format)
        print_dry_run(self.recipe, f"training data: format {self.format}", stats, self.report.summary())

    def build_trainer(self, tokenizer, make_args):
        trainer, _ = prepare_static_trainer(
            self.recipe, tokenizer, self.train, self.eval, make_args, objective=self.objective
        )
        return trainer
