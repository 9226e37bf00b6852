"""A full disk or an output directory that cannot be written: one message naming the path and the free
space, instead of a torch or safetensors traceback.

* Before any model loads, the output directory (or its nearest existing parent) must be writable: a
  read-only file system or a directory without write permission is a recipe error (exit 2).
* A write that fails during training or saving (no space left, quota, read-only, permission) ends the run
  with `WriteFailed` (exit 1) naming the file or directory, the reason, the free space of its file system, and
  the newest complete checkpoint to resume from. Checkpoints being written when it happened lack the file
  their trainer writes last (see `alignment.checkpoints`), so they are never resumed; they are deleted, as
  they hold the space the next attempt needs, and the message says so.

Checkpoints are written under their final name (`checkpoint-N`, which transformers' rotation and DeepSpeed's
per-rank writers expect), not under a temporary one renamed at the end: the marker file written last gives
the same guarantee, a checkpoint is resumable only once all of it is on disk.

torch reports a failed write without the operating system's reason (``PytorchStreamWriter failed writing
file ...: file write failed``, or ``[enforce fail at inline_container.cc] unexpected pos ...`` after a short
write), so its zip writer's messages are matched too, and the free space tells the rest.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from alignment.checkpoints import checkpoint_step, complete_checkpoints
from alignment.errors import EXIT_FAILED, AlignmentError, RecipeError

logger = logging.getLogger("alignment")

GENERIC = "a write failed"
FULL_BELOW = 64 * 1024  # bytes free under which a write that failed without a reason ran out of space
REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: how libraries word a failed write when they drop the errno (safetensors, torch)
MESSAGES = {
    "No space left on device": "no space left on device",
    "StorageFull": "no space left on device",
    "Disk quota exceeded": "disk quota exceeded",
    "Read-only file system": "read-only file system",
    "ReadOnlyFilesystem": "read-only file system",
    "file write failed": GENERIC,
    "inline_container.cc": GENERIC,  # torch.save's zip writer, e.g. "unexpected pos ... vs ..." (short write)
}


class WriteFailed(AlignmentError):
    """Training or saving could not write to disk; finished work stays where it was (exit status 1)."""

    exit_code = EXIT_FAILED


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def write_failure(err: BaseException) -> tuple[str, str | None] | None:
    """(reason, path or None) when `err`, or an error it came from, is a failed write; None otherwise."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.errno in REASONS:
            return REASONS[e.errno], e.filename
    text = " ".join(str(e) for e in _chain(err))
    for needle, reason in MESSAGES.items():
        if needle in text:
            return reason, None
    return None


def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path: str | os.PathLike) -> tuple[int, str]:
    """(bytes free, '0.4 MiB free of 3.0 MiB on its file system') for the file system holding `path` (or its
    nearest existing parent)."""
    usage = shutil.disk_usage(_existing(Path(path)))
    return usage.free, f"{_size(usage.free)} free of {_size(usage.total)} on its file system"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_writable(output_dir: str | os.PathLike) -> None:
    """RecipeError at output_dir when the run could not write it (tested by creating and removing a file in
    the directory, or in its nearest existing parent when it does not exist yet)."""
    target = _existing(Path(output_dir))
    if not target.is_dir():
        raise RecipeError("output_dir", f"'{output_dir}': {target} is a file, not a directory")
    probe = target / f".alignment-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = REASONS.get(err.errno, err.strerror or str(err))
        raise RecipeError(
            "output_dir", f"'{output_dir}' cannot be written ({target}: {reason}); choose another output_dir"
        ) from None


def remove_incomplete_checkpoints(output_dir: str | os.PathLike, marker: str) -> list[str]:
    """Delete the `checkpoint-N` folders newer than the newest complete one (they lack `marker`)."""
    complete = complete_checkpoints(output_dir, marker)
    newest = checkpoint_step(complete[-1].name) if complete else -1
    removed = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        if folder.is_dir() and checkpoint_step(folder.name) > newest and not (folder / marker).exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return sorted(removed)


@contextlib.contextmanager
def explain_write_errors(output_dir: str, *, what: str, marker: str, main_process: bool) -> Iterator[None]:
    """Turn a failed write inside the body (writing `what`) into `WriteFailed` with the path, the reason,
    the free space and the checkpoint to resume from; other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        failure = write_failure(err)
        if failure is None:
            raise
        reason, path = failure
        left, free = free_space(
            path or output_dir
        )  # before the incomplete checkpoints go: what the write had
        if reason == GENERIC and left < FULL_BELOW:
            reason = "no space left on device"
        removed = remove_incomplete_checkpoints(output_dir, marker) if main_process else []
        complete = complete_checkpoints(output_dir, marker)
        parts = [
            f"could not write {what} ({path or output_dir}): {reason}; {free}",
            f"removed the incomplete {', '.join(removed)}" if removed else "",
            f"the newest complete checkpoint is {complete[-1]}: free some space (or move the run) and resume with "
            "training.resume_from_checkpoint=last"
            if complete
            else "no complete checkpoint was saved: free some space and run again",
        ]
        raise WriteFailed("; ".join(p for p in parts if p)) from None
