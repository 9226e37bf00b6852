"""Process-group setup and the few distributed questions the run lifecycle asks.

Every launch goes through here once, before any `TrainingArguments` exist, so each method kind sees the
same world size (see docs/deepspeed.md for the CPU facts this relies on).
"""

from __future__ import annotations

import contextlib
import os


def deepspeed_launch() -> bool:
    """True under `accelerate launch --config_file <a DeepSpeed config>`."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"


def quiet_known_warnings() -> None:
    """Silence the warnings every CPU run printed that say nothing wrong: DeepSpeed's "Setting accelerator to
    CPU" (told so directly when there is no CUDA device) and the DataLoader's "'pin_memory' ... no accelerator"."""
    import warnings

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        warnings.filterwarnings(
            "ignore", message=".*'pin_memory' argument is set as true but no accelerator.*"
        )


def launch_main_process() -> bool:
    """Whether this is the launch's main process (rank 0; a plain process is its own launch), readable
    before any process group exists: the one that clears and locks the output directory."""
    return os.environ.get("RANK", "0") == "0"


def any_process(flag: bool, device) -> bool:
    """True on every process when `flag` is true on any process: one tiny all-reduce when distributed (the
    way all ranks take the same decision, e.g. to stop or to skip a step), `flag` itself otherwise."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def launch_zero_stage() -> int:
    """The ZeRO stage the accelerate launch configured (0: none), readable before any trainer exists."""
    if not deepspeed_launch():
        return 0
    return int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)


def setup_distributed() -> None:
    """DeepSpeed launches: create accelerate's shared state before the Trainer (`use_configured_state`).

    On CPU accelerate picks no backend without an accelerator, so give it gloo explicitly (without this every
    rank believes it is alone and DeepSpeed rejects the batch sizes), and leave DeepSpeed's shared-memory
    all-reduce out: it is a C++ op compiled on first use (40 s to minutes), and plain gloo is enough for CPU
    runs. On GPU machines accelerate's own choice (nccl) stands.
    """
    import torch

    if not deepspeed_launch():
        return
    from accelerate import PartialState

    if torch.cuda.is_available():
        PartialState()
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    PartialState(backend="gloo")


def main_process_first():
    """Rank 0 first, then the others (they then read its caches); a no-op outside distributed runs."""
    from accelerate import PartialState

    return PartialState().main_process_first() if PartialState._shared_state else contextlib.nullcontext()


def zero_stage(trainer) -> int:
    """The DeepSpeed ZeRO stage of the trainer's run, 0 without DeepSpeed."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return int(plugin.zero_stage) if plugin is not None else 0


def end_trainer_state() -> None:
    """Forget the finished Trainer's accelerate state (keeping the process group) and free its memory, so a
    next stage in the same process can build its own Trainer: accelerate refuses a second DeepSpeed
    `Accelerator` while the first one's state is alive. A staged run (Selfie) calls this between stages."""
    import gc

    import torch
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    unset_hf_deepspeed_config()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
