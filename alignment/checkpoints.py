"""Which `checkpoint-N` directories are complete: those holding the file their trainer writes last (a
checkpoint cut short by a crash or a full disk lacks it and is never resumed)."""

from __future__ import annotations

import os
from pathlib import Path


def complete_checkpoints(output_dir: str | os.PathLike, marker: str) -> list[Path]:
    """The checkpoints in `output_dir` that hold `marker`, oldest first ([] when there are none)."""
    root = Path(output_dir)
    found = [
        p for p in root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / marker).exists()
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))
