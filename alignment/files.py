"""Writing result files so that a crash or Ctrl-C never leaves a half-written one."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=8)
def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes (weights identify a model in cache keys); memoised per process."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def user_cache_dir() -> Path:
    """Where built artefacts are cached across runs and checkouts: `$ALIGNMENT_CACHE`, default ~/.cache/alignment."""
    return Path(os.environ.get("ALIGNMENT_CACHE", Path.home() / ".cache" / "alignment"))


def write_text_atomic(path: Path, text: str) -> None:
    """`text` at `path`, through a temporary file and an atomic rename: readers see the old or the new file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as indented JSON at `path`, through a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(payload, indent=2))
