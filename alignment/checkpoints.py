"""Which `checkpoint-N` directories are complete: those holding the file their trainer writes last (a
checkpoint cut short by a crash or a full disk lacks it and is never resumed)."""

from __future__ import annotations

import os
from pathlib import Path


def checkpoint_step(name: str) -> int:
    """N of a `checkpoint-N` folder name (-1 for a name without a number)."""
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1


def complete_checkpoints(output_dir: str | os.PathLike, marker: str) -> list[Path]:
    """The checkpoints in `output_dir` that hold `marker`, oldest first ([] when there are none)."""
    found = [
        p
        for p in Path(output_dir).glob("checkpoint-*")
        if checkpoint_step(p.name) >= 0 and (p / marker).exists()
    ]
    return sorted(found, key=lambda p: checkpoint_step(p.name))
