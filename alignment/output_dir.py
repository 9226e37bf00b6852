"""A run's output directory: never overwritten by accident, never shared by two runs at once.

A new run into a directory that already holds a run (finished or partial) is refused with the three ways on:
resume it (`training.resume_from_checkpoint=last`), write elsewhere (`output_dir=...`), or `--overwrite`, which
deletes the directory first. While a run works in a directory it holds `output_dir/.alignment.lock` (pid,
host, start); a second run into it is refused, unless that process is gone (same host): a stale lock is
taken over. Under a multi-process launch the main process holds the lock for all of them. How a run ended
is recorded in `output_dir/run_status.json` (finished, failed with its error, interrupted).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from alignment.checkpoints import checkpoint_step
from alignment.errors import EXIT_INTERRUPTED, RecipeError
from alignment.files import write_json_atomic

logger = logging.getLogger("alignment")

LOCK_FILE = ".alignment.lock"
STATUS_FILE = "run_status.json"
#: files whose presence means a directory holds a run (started, trained, or evaluated)
RUN_FILES = (
    "recipe.yaml",
    "trainer_state.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "eval.json",
    "eval_history.jsonl",
)


def describe_run(output_dir: str | Path) -> str | None:
    """What run `output_dir` holds ('a finished run (eval.json, model.safetensors)', 'a partial run
    (checkpoint-32; no final model)'), or None when it holds none."""
    path = Path(output_dir)
    if not path.is_dir():
        return None
    found = [name for name in RUN_FILES if (path / name).exists()]
    checkpoints = sorted((p.name for p in path.glob("checkpoint-*") if p.is_dir()), key=checkpoint_step)
    if not found and not checkpoints:
        return None
    status = read_status(path)
    finished = (path / "eval.json").exists() or (path / "trainer_state.json").exists()
    shown = [n for n in found if n != "recipe.yaml"] + checkpoints[-1:]
    kind = "a finished run" if finished else "a partial run"
    if status.get("status") in ("failed", "interrupted"):
        kind = f"an {status['status']} run" if status["status"] == "interrupted" else "a failed run"
    detail = ", ".join(shown) if shown else "recipe.yaml only: started, nothing saved yet"
    if status.get("error"):
        detail += f"; {status['error']}"
    return f"{kind} ({detail})"


def read_status(output_dir: str | Path) -> dict:
    """`run_status.json`: {"status": finished | failed | interrupted, "ended", "error"}; {} when absent."""
    try:
        return json.loads((Path(output_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@contextlib.contextmanager
def run_status(output_dir: str | Path) -> Iterator[list[int]]:
    """Record how the body ended in `output_dir/run_status.json`, so a failed or interrupted run is never
    mistaken for a finished one (its recipe.yaml and checkpoints look alike). The body appends its exit code
    to the yielded list; a run that failed before writing anything leaves nothing behind."""
    codes: list[int] = []
    status, error = "failed", None
    try:
        yield codes
        status = "finished" if codes and codes[-1] == 0 else "failed"
        error = None if status == "finished" else f"exit code {codes[-1] if codes else '?'}"
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt) or getattr(err, "exit_code", None) == EXIT_INTERRUPTED:
            status, error = "interrupted", str(err) or "interrupted (Ctrl-C or SIGTERM)"
        else:
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        path = Path(output_dir)
        if describe_run(path) is not None:
            payload = {"status": status, "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "error": error}
            try:
                write_json_atomic(path / STATUS_FILE, payload)
            except OSError as err:  # a full disk: the run's own error says more than this one
                logger.warning("could not write %s: %s", path / STATUS_FILE, err)


def check_output_dir(output_dir: str | Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuse a new run into a directory that holds one, naming what it holds and the ways on."""
    if resuming or overwrite:
        return
    held = describe_run(output_dir)
    if held is not None:
        raise RecipeError(
            "output_dir",
            f"'{output_dir}' already holds {held}; to continue it: training.resume_from_checkpoint=last; to keep "
            "it: another output_dir=...; to replace it: --overwrite (deletes the directory first)",
        )


def clear_output_dir(output_dir: str | Path) -> None:
    """`--overwrite`: the old run goes entirely (weights, checkpoints, eval.json, plots), not file by file."""
    path = Path(output_dir)
    if path.exists():
        logger.warning("--overwrite: deleting %s (%s)", path, describe_run(path) or "no run")
        shutil.rmtree(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def output_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold `output_dir/.alignment.lock` for the body; refuse (exit 2) when another live run holds it."""
    path = Path(output_dir) / LOCK_FILE
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):  # a second try after taking over a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder.get("host") == me["host"] and not _alive(int(holder.get("pid", -1))):
                logger.warning("taking over a stale lock %s (pid %s is gone)", path, holder.get("pid"))
                path.unlink(missing_ok=True)
                continue
            where = "on this host" if holder.get("host") == me["host"] else f"on host {holder.get('host')}"
            raise RecipeError(
                "output_dir",
                f"'{output_dir}' is in use by another run (pid {holder.get('pid')} {where}, since "
                f"{holder.get('started')}); wait for it, or choose another output_dir; if that run is gone, "
                f"delete {path}",
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield
    finally:
        if _read_lock(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
        if created and not any(
            path.parent.iterdir()
        ):  # a run refused before it wrote anything leaves no trace
            path.parent.rmdir()


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
