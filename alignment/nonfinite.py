"""Non-finite losses, gradients and weights: skip the step, stop after too many, never save them.

A learning rate far too high (or a bad batch) makes the loss or the gradients NaN/inf; one optimizer step
on them turns every weight NaN, and before this guard the run went on to save NaN weights as checkpoints
and as the final model. Now:

* After the gradients are clipped and before the optimizer steps, every process agrees (one all-reduce)
  whether any micro-batch loss of the step or the gradient norm was non-finite. If so the gradients are
  dropped (`grad = None`: torch optimizers leave such parameters, and their moments, untouched), so the step
  changes no weight, and a warning names the step. The scheduler still advances, as for any step.
* After `training.max_nonfinite_steps` skipped steps the next one stops the run with `TrainingDiverged`
  (exit 1), naming the step and the newest complete checkpoint to resume from with a lower learning rate.
* Before any checkpoint and at the last step (what becomes the final model), the weights themselves are
  checked; non-finite ones stop the run before anything is written (an overflowing update can make weights
  inf from finite gradients).
* Under DeepSpeed the optimizer steps inside the backward pass, before any callback runs, so a step cannot
  be skipped: the first non-finite step stops the run, and the weights in memory are never saved.

Losses are logged as they are (`logging_nan_inf_filter` is off by default), so a NaN shows as NaN.
"""

from __future__ import annotations

import logging
import os

import torch
from transformers import TrainerCallback

from alignment.checkpoints import complete_checkpoints
from alignment.distributed import any_process
from alignment.errors import EXIT_FAILED, AlignmentError

logger = logging.getLogger("alignment")

LIMIT_KEY = "max_nonfinite_steps"


class TrainingDiverged(AlignmentError):
    """Training produced non-finite values it could not skip; nothing non-finite was saved (exit status 1)."""

    exit_code = EXIT_FAILED


def gradients_finite(model: torch.nn.Module) -> bool:
    """Whether every gradient present is finite (one fused norm over all of them, then one sync)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every weight this process holds is finite (under ZeRO-3, its own partition)."""
    tensors = [getattr(p, "ds_tensor", p).detach() for p in model.parameters()]
    tensors = [t for t in tensors if t.numel()]
    return not tensors or bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all())


def drop_gradients(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


class NonFiniteGuard(TrainerCallback):
    """Skips optimizer steps whose loss or gradients are non-finite, up to `limit`, then stops; refuses to let
    non-finite weights reach a checkpoint or the final model. `trainer` records each micro-batch loss
    (`MetricsTrainer.note_loss`); `marker` is the file a complete checkpoint holds (to name the last good one)."""

    def __init__(self, trainer, *, limit: int, marker: str, deepspeed: bool):
        self.trainer = trainer
        self.limit = limit
        self.marker = marker
        self.deepspeed = deepspeed
        self.skipped: list[int] = []

    def _last_good(self, output_dir: str | os.PathLike) -> str:
        done = complete_checkpoints(output_dir, self.marker)
        return (
            f"the last good checkpoint is {done[-1]}"
            if done
            else "no complete checkpoint was saved before it"
        )

    def _diverged(self, args, step: int, what: str, advice: str) -> TrainingDiverged:
        return TrainingDiverged(
            f"training stopped at step {step}: {what}; nothing was saved from it, and {self._last_good(args.output_dir)}. "
            f"{advice}"
        )

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        step = state.global_step + 1  # the step about to be taken, as the logs number it
        loss_ok = self.trainer.step_losses_finite()
        grads_ok = self.deepspeed or gradients_finite(model)  # DeepSpeed keeps (and has applied) its own
        if not any_process(not (loss_ok and grads_ok), args.device):
            return control
        what = "the loss" if not loss_ok else "the gradients"
        if self.deepspeed:
            raise self._diverged(
                args, step, f"{what} became non-finite (NaN or inf), and under DeepSpeed a step cannot be skipped "
                "(its optimizer steps inside the backward pass)", "Lower training.learning_rate and resume from it.",
            )  # fmt: skip
        if len(self.skipped) >= self.limit:
            raise self._diverged(
                args, step, f"{what} was non-finite (NaN or inf) again, after {len(self.skipped)} skipped step(s) "
                f"({', '.join(map(str, self.skipped))}; training.{LIMIT_KEY}: {self.limit})",
                "Lower training.learning_rate (or check the data) and resume from it, or start again.",
            )  # fmt: skip
        drop_gradients(model)
        self.skipped.append(step)
        logger.warning(
            "step %d: %s non-finite (NaN or inf); step skipped, weights unchanged (%d of at most %d: training.%s)",
            step, what + " was", len(self.skipped), self.limit, LIMIT_KEY,
        )  # fmt: skip
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        final = state.global_step >= state.max_steps or control.should_training_stop
        if (control.should_save or final) and any_process(not weights_finite(model), args.device):
            raise self._diverged(
                args, state.global_step, "the weights became non-finite (NaN or inf)",
                "Lower training.learning_rate and resume from it.",
            )  # fmt: skip
        return control
