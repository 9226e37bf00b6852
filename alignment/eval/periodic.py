"""Evaluation during training: `evaluation.every_n_steps: N` evaluates the live policy every N optimizer
steps and records it in `output_dir/eval_history.jsonl` (`alignment.eval.history`), the win-rate-vs-KL
path the final `eval_rewards.png` draws.

* Rank 0 evaluates alone, as the final evaluation does; the other ranks wait in the next step's collective,
  so one evaluation must finish within the process-group timeout (`training.ddp_timeout`, 1800 s).
* ZeRO-3 is refused: there no rank holds the whole model, and generating on rank 0 alone would hang in the
  parameter gathers. Use ZeRO-2 (or no DeepSpeed) with `every_n_steps`, or evaluate only at the end.
* Evaluation does not change training: the model goes back to train mode, sampling forks the RNG and
  nothing else draws random numbers, so a run gives the same weights with or without it.
"""

from __future__ import annotations

from transformers import TrainerCallback

from alignment.distributed import launch_zero_stage
from alignment.errors import RecipeError
from alignment.eval.gold import eval_payload
from alignment.eval.history import append_history, keep_history_until
from alignment.eval.run import RecipeEvaluator


def zero3_refusal() -> RecipeError:
    return RecipeError(
        "evaluation.every_n_steps",
        "cannot evaluate during a ZeRO-3 run (no rank holds the whole model); use ZeRO-2, or set it to null "
        "and rely on the final evaluation",
    )


class PeriodicEvaluation(TrainerCallback):
    """Every `every_n_steps` optimizer steps: evaluate the live model and append to the history."""

    def __init__(self, evaluator: RecipeEvaluator, every_n_steps: int, output_dir: str):
        self.evaluator = evaluator
        self.every_n_steps = every_n_steps
        self.output_dir = output_dir

    def on_train_begin(self, args, state, control, **kwargs):
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():  # ZeRO-3 from `training.deepspeed` rather than the launch config
            raise zero3_refusal()
        if state.is_world_process_zero:
            keep_history_until(self.output_dir, state.global_step)  # a resumed run trains later steps again
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every_n_steps == 0 and state.is_world_process_zero:
            result = self.evaluator(model)
            append_history(self.output_dir, state.global_step, eval_payload(result))
        return control


def periodic_evaluation(evaluator: RecipeEvaluator) -> PeriodicEvaluation | None:
    """The callback for every trainer of a run with `evaluation.every_n_steps`, else None.

    Built on every rank with the run's one evaluator (built before any model loads); only rank 0 evaluates.
    """
    recipe = evaluator.recipe
    if recipe.evaluation.every_n_steps is None:
        return None
    if launch_zero_stage() == 3:  # refused before any model loads
        raise zero3_refusal()
    return PeriodicEvaluation(evaluator, recipe.evaluation.every_n_steps, recipe.output_dir)
