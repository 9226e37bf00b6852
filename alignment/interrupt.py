"""Stopping and resuming training. Ctrl-C (or SIGTERM, as a scheduler sends): finish the step, save a
checkpoint, stop; a resumed run says where it picked up.

The first signal only sets a flag; at the end of the optimizer step every process agrees on it (one
all-reduce, so all ranks save the same step), the Trainer saves a complete checkpoint and stops, and the run
ends with `RunInterrupted` (exit 130) saying where the checkpoint is and how to resume. A second signal
stops at once, as Ctrl-C normally does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from transformers import TrainerCallback

from alignment.distributed import any_process
from alignment.errors import EXIT_INTERRUPTED, AlignmentError

logger = logging.getLogger("alignment")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(AlignmentError):
    """The run was interrupted and saved a checkpoint to resume from (exit status 130, as for Ctrl-C)."""

    exit_code = EXIT_INTERRUPTED


class StopAtStepEnd(TrainerCallback):
    """Turns a pending interrupt into `should_save` + `should_training_stop` at the next step end."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.requested.is_set(), args.device):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


class ResumeNotice(TrainerCallback):
    """Says which checkpoint a resumed run continues from, and where it stands (the Trainer says nothing)."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            logger.info(
                "resuming from %s (step %d of %d)", self.checkpoint, state.global_step, state.max_steps
            )


@contextlib.contextmanager
def checkpoint_on_interrupt(callback: StopAtStepEnd) -> Iterator[None]:
    """During the body, the first SIGINT/SIGTERM asks `callback` to save and stop; a second one raises
    KeyboardInterrupt at once. The previous handlers come back afterwards."""

    def handle(signum, frame):
        if callback.requested.is_set():
            raise KeyboardInterrupt
        callback.requested.set()
        logger.warning(
            "%s: saving a checkpoint at the end of this step, then stopping (again to stop at once)",
            signal.Signals(signum).name,
        )

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
