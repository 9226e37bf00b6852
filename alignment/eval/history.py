"""`output_dir/eval_history.jsonl`: one JSON line per evaluation during training, ``{"step": N, ...eval.json}``.

The file is always rewritten whole through a temporary file and an atomic rename (it holds tens of lines),
so a crash leaves the previous complete file, never half a line. It describes the training trajectory that
produced the checkpoint in `output_dir`: a fresh run starts it empty, and a run resumed at step S keeps the
lines up to S and drops later ones (they came from the interrupted run, whose steps after S are trained
again), so no step appears twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignment.files import write_text_atomic

HISTORY_FILE = "eval_history.jsonl"


def history_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / HISTORY_FILE


def read_history(output_dir: str | Path) -> list[dict[str, Any]]:
    """The recorded evaluations in step order ([] when there are none)."""
    path = history_path(output_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write(output_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    path = history_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_history(output_dir: str | Path, step: int, payload: dict[str, Any]) -> None:
    """Add the evaluation at `step` (``payload``: the eval.json keys), replacing one already at that step."""
    rows = [row for row in read_history(output_dir) if row["step"] != step]
    _write(output_dir, sorted([*rows, {"step": step, **payload}], key=lambda row: row["step"]))


def keep_history_until(output_dir: str | Path, step: int) -> None:
    """Drop the evaluations after `step` (0: all of them), where training (re)starts."""
    rows = read_history(output_dir)
    kept = [row for row in rows if row["step"] <= step]
    if len(kept) != len(rows):
        _write(output_dir, kept)
