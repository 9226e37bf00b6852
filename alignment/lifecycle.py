"""One run lifecycle for every method kind.

    tokenizer → data (and --dry-run) → resume check → distributed setup → save recipe → callbacks
    → build the models, TrainingArguments and the trainer, and train → save model, state and tokenizer → evaluate on rank 0 → summary

The order matters for users: everything that can fail because of their input (recipe, data files, columns,
formats, a resume path) is checked before any model loads, and `--dry-run` stops right after the data. A
`RunKind` (static preference data, on-policy data, reward model, ...) supplies only its own steps; the
sequence, its ordering guarantees and the outputs every run writes live here once.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.checkpoints import complete_checkpoints
from alignment.disk import explain_write_errors
from alignment.distributed import deepspeed_launch, setup_distributed
from alignment.errors import DataError
from alignment.recipe.load import dump_recipe, save_recipe
from alignment.recipe.schema import Recipe, to_training_arguments

logger = logging.getLogger("alignment")


def setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resume_argument(recipe: Recipe, marker: str) -> str | None:
    """training.resume_from_checkpoint: 'last'/'true' for the newest complete checkpoint, or a path, which must be
    complete (`marker`, the file its trainer writes last, present); None when not resuming. A checkpoint
    cut short (a crash or a full disk while saving) is never resumed."""
    value = recipe.training.get("resume_from_checkpoint")
    if value is None:
        return None
    complete = complete_checkpoints(recipe.output_dir, marker)
    if str(value).lower() in ("true", "last"):
        if not complete:
            raise DataError(
                f"training.resume_from_checkpoint: last, but {recipe.output_dir} holds no complete checkpoint "
                f"(checkpoint-N with {marker}); remove the key to start a new run"
            )
        return str(complete[-1])
    if not Path(value).is_dir():
        raise DataError(f"training.resume_from_checkpoint: '{value}' is not a checkpoint directory")
    if not (Path(value) / marker).exists():
        newest = f"the newest complete one is {complete[-1]}" if complete else "there is no complete one"
        raise DataError(
            f"training.resume_from_checkpoint: '{value}' is an incomplete checkpoint (no {marker}: its saving was "
            f"cut short); {newest}"
        )
    return str(value)


def training_arguments(recipe: Recipe, args_class: type | None = None):
    """TrainingArguments for the run. Under DeepSpeed they must use the process group `setup_distributed`
    made (`use_configured_state`): otherwise each rank sees a world of one and DeepSpeed's batch-size check
    fails. Resuming is the lifecycle's job (`resume_argument`), not the arguments'."""
    extra: dict[str, Any] = {"resume_from_checkpoint": None}
    if deepspeed_launch():
        extra["accelerator_config"] = {"use_configured_state": True}
    return to_training_arguments(recipe, args_class, **extra)


def print_dry_run(recipe: Recipe, title: str, stats: dict[str, Any], truncation: str) -> None:
    print("# resolved recipe\n" + dump_recipe(recipe))
    print(f"# {title}")
    for key, value in stats.items():
        print(f"  {key}: {value}")
    print(f"# truncation: {truncation}")
    print("dry run: recipe and data are valid; nothing was trained.")


class RunKind(ABC):
    """The steps every kind of run supplies; `execute` calls them in the lifecycle's order. A kind that only
    evaluates (URIAL) is a `RunKind`; one that trains is a `TrainingRunKind`."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    @abstractmethod
    def load_data(self, tokenizer) -> None:
        """Load, validate and tokenize the data (no model may load here); keep it on `self`."""

    @abstractmethod
    def print_dry_run(self) -> None:
        """The --dry-run report of the loaded data (`print_dry_run` for the common layout)."""

    @abstractmethod
    def evaluate(self, trainer, tokenizer, seconds: float) -> dict[str, Any] | None:
        """Rank 0 only, after the model was saved (`trainer` None when nothing trained): writes
        output_dir/eval.json; None when disabled."""

    @abstractmethod
    def print_summary(self, trainer, result: dict[str, Any] | None) -> None:
        """The lines a user reads at the end (rank 0)."""


class StagedRun(ABC):
    """A run made of complete runs, one per stage, each through `execute_loaded` into its own directory
    (Selfie: the seed DPO, then one self-labelled iteration per prompt pool)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    @abstractmethod
    def execute(self, *, dry_run: bool = False) -> int:
        """Every stage not already finished, in order; returns the process exit code."""


class TrainingRunKind(RunKind):
    """A kind that trains: the lifecycle adds resume, distributed setup, the trainer and saving the model."""

    #: a TrainingArguments subclass the kind's trainer needs (None: TrainingArguments)
    args_class: type | None = None
    #: the file its trainer writes last into a checkpoint: a checkpoint without it is incomplete
    checkpoint_marker: str = "alignment_state.json"

    @abstractmethod
    def build_trainer(self, tokenizer, make_args: Callable[[], Any]):
        """The model(s) and the `transformers.Trainer` subclass that trains them.

        `make_args()` gives the run's TrainingArguments. When it is called matters under ZeRO-3: once they
        exist, `from_pretrained` loads partitioned (`zero.Init`), so a kind that needs a whole model before
        training (precomputed reference log-probs) loads it first and calls `make_args` after."""

    def callbacks(self, tokenizer) -> list:
        """`TrainerCallback`s the kind adds to its trainer, built before any model loads (so their input
        errors stop the run early); none by default."""
        del tokenizer
        return []

    def after_training(self, trainer, seconds: float) -> None:
        """Anything the kind writes once training is over, on every rank before the model is saved."""
        del trainer, seconds


def check_models(recipe: Recipe, *, dry_run: bool = False) -> None:
    """Every model the run loads by name resolves to one it can load (the policy; the reward model), named by
    its recipe key, before the tokenizer or any weights load (the evaluator checks its judge and reference).
    A built-on-first-use alias (toy-rm) is built here, except in a dry run, which says that a run will."""
    from alignment.models import build_aliases, check_model_name

    trust = recipe.model.trust_remote_code
    check_model_name(recipe.model.name_or_path, "model.name_or_path", trust_remote_code=trust)
    if recipe.reward.kind == "model":
        try:
            check_model_name(recipe.reward.name_or_path, "reward.name_or_path", trust_remote_code=trust)
        except DataError as err:
            raise DataError(
                f"{err}. A reward model is the output of a reward_model run: e.g. `alignment "
                "recipes/reward_model.yaml` writes runs/reward_model; on the toy world, `toy-rm` is built on first use"
            ) from None
        build_aliases([recipe.reward.name_or_path], dry_run=dry_run)


def load_recipe_tokenizer(recipe: Recipe):
    from alignment.models import load_tokenizer

    return load_tokenizer(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )


def save_run(trainer, tokenizer, output_dir: str) -> None:
    """Model (all ranks: under ZeRO-3 this gathers the shards), trainer_state.json, tokenizer (rank 0)."""
    trainer.save_model(output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)


def raise_interrupted(trainer, recipe: Recipe, step: int) -> None:
    """After an interrupt saved checkpoint-`step`: every process stops with the resume instructions."""
    from alignment.interrupt import RunInterrupted

    trainer.accelerator.wait_for_everyone()
    checkpoint = Path(recipe.output_dir) / f"checkpoint-{step}"
    raise RunInterrupted(
        f"interrupted at step {step} of {trainer.state.max_steps}; checkpoint {checkpoint}; resume with the "
        "same command and training.resume_from_checkpoint=last"
    )


def execute(kind: RunKind, *, dry_run: bool = False) -> int:
    """Run `kind`'s recipe through the whole lifecycle; returns the process exit code."""
    check_models(kind.recipe, dry_run=dry_run)
    tokenizer = load_recipe_tokenizer(kind.recipe)
    kind.load_data(tokenizer)
    if dry_run:
        kind.print_dry_run()
        return 0
    return execute_loaded(kind, tokenizer)


def execute_loaded(kind: RunKind, tokenizer) -> int:
    """The lifecycle after `kind.load_data(tokenizer)`: what a staged run (Selfie) calls for each stage, having
    loaded every stage's data first."""
    recipe = kind.recipe
    run_started = time.time()
    if not isinstance(kind, TrainingRunKind):  # evaluation only: nothing to resume, train or save
        save_recipe(recipe, recipe.output_dir)
        kind.print_summary(None, evaluate_timed(kind, None, tokenizer, 0.0, run_started))
        return 0
    resume = resume_argument(recipe, kind.checkpoint_marker)  # a bad checkpoint fails before any model loads
    setup_distributed()
    save_recipe(recipe, recipe.output_dir)
    callbacks = kind.callbacks(tokenizer)
    started = time.time()
    trainer = kind.build_trainer(tokenizer, lambda: training_arguments(recipe, kind.args_class))
    writes = functools.partial(
        explain_write_errors,
        recipe.output_dir,
        marker=kind.checkpoint_marker,
        main_process=trainer.is_world_process_zero(),
    )
    with writes(what="a checkpoint"):
        train(kind, trainer, callbacks, resume)
    seconds = time.time() - started
    kind.after_training(trainer, seconds)
    with writes(what="the final model"):
        save_run(trainer, tokenizer, recipe.output_dir)
    logger.info("training finished in %.1f s", seconds)
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return 0
    from alignment.trainers.curves import plot_training_curves

    with writes(what="the evaluation results"):
        plot_training_curves(recipe.output_dir, f"{recipe.method.name}: {recipe.output_dir}")
        kind.print_summary(trainer, evaluate_timed(kind, trainer, tokenizer, seconds, run_started))
    return 0


def evaluate_timed(
    kind: RunKind, trainer, tokenizer, seconds: float, run_started: float
) -> dict[str, Any] | None:
    """`kind.evaluate`, logging its wall time and its share of the run's (from the lifecycle's start, after the
    data loaded): evaluation is the part of a run nobody watches, so its cost is said out loud."""
    started = time.time()
    result = kind.evaluate(trainer, tokenizer, seconds)
    if result is not None:
        spent, total = time.time() - started, time.time() - run_started
        logger.info(
            "evaluation finished in %.1f s, %.0f%% of the run's %.1f s", spent, 100 * spent / total, total
        )
    return result


def train(kind: TrainingRunKind, trainer, callbacks: list, resume: str | None) -> None:
    """`trainer.train` with the kind's callbacks and the lifecycle's own: Ctrl-C saves and stops, a resumed run
    says where it picks up, and non-finite steps are skipped (and never saved)."""
    from alignment.interrupt import ResumeNotice, StopAtStepEnd, checkpoint_on_interrupt
    from alignment.nonfinite import LIMIT_KEY, NonFiniteGuard

    for callback in callbacks:
        trainer.add_callback(callback)
    stopper = StopAtStepEnd()
    trainer.add_callback(stopper)
    if resume is not None:
        trainer.add_callback(ResumeNotice(resume))
    guard = NonFiniteGuard(
        trainer,
        limit=kind.recipe.training[LIMIT_KEY],
        marker=kind.checkpoint_marker,
        deepspeed=deepspeed_launch(),
    )
    trainer.add_callback(guard)  # last: it reads the save/stop decisions the others made at each step end
    with checkpoint_on_interrupt(stopper):
        trainer.train(resume_from_checkpoint=resume)
    if stopper.stopped_at is not None:
        raise_interrupted(trainer, kind.recipe, stopper.stopped_at)
