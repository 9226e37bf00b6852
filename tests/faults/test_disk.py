"""A full disk and a read-only output directory (issue 14, item 4).

Where the test process may mount file systems (root in a container with CAP_SYS_ADMIN, as on this project's
machines and CI), the run writes to a real tmpfs too small for its second checkpoint, so the kernel itself
answers ENOSPC (torch's zip writer then reports a short write), and a read-only tmpfs for the other case.
Elsewhere the same tests make the second checkpoint's weight file raise OSError(ENOSPC), and use /sys (where
nothing may be created) as the unwritable directory.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path

import pytest

from alignment.cli import main
from alignment.disk import write_failure
from alignment.output_dir import read_status

pytestmark = pytest.mark.integration

CHECKPOINT_MIB = 7  # one checkpoint of the tiny model (4.8 MiB) fits, a second does not


def mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
    except OSError:  # no mount command
        return False
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """(directory, make_room): a directory on a 7 MiB tmpfs, or a monkeypatched ENOSPC from the 2nd weight save."""
    disk = tmp_path / "disk"
    if mount_tmpfs(disk, f"size={CHECKPOINT_MIB}m"):
        yield disk, lambda: subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        subprocess.run(["umount", "-l", str(disk)])
        return
    import transformers.modeling_utils as saving

    save_file, calls = saving.safe_save_file, []

    def full(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))
        return save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(saving, "safe_save_file", full)
    yield disk, lambda: monkeypatch.setattr(saving, "safe_save_file", save_file)


def run_args(tiny_model_dir, out, *extra: str) -> list[str]:
    return [
        "recipes/dpo.yaml", f"model.name_or_path={tiny_model_dir}", "data.train.args.n=48",
        "training.max_steps=4", "training.per_device_train_batch_size=4", "training.save_steps=1",
        "evaluation.enabled=false", f"output_dir={out}", *extra,
    ]  # fmt: skip


def test_a_full_disk_names_the_path_and_free_space_and_the_run_resumes_once_there_is_room(
    tiny_model_dir, small_disk, capsys, caplog
):
    disk, make_room = small_disk
    out = disk / "run"
    assert main(run_args(tiny_model_dir, out)) == 1
    err = capsys.readouterr().err
    assert "error: could not write a checkpoint (" in err and "no space left on device; " in err
    assert " free of " in err and "removed the incomplete checkpoint-2" in err
    assert f"the newest complete checkpoint is {out}/checkpoint-1: free some space" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert read_status(out)["status"] == "failed"

    make_room()
    caplog.set_level(logging.INFO, logger="alignment")
    assert main(run_args(tiny_model_dir, out, "training.resume_from_checkpoint=last")) == 0
    assert f"resuming from {out}/checkpoint-1 (step 1 of 4)" in caplog.text
    assert (out / "model.safetensors").exists() and read_status(out)["status"] == "finished"


def test_an_unwritable_output_dir_is_refused_before_any_model_loads(tiny_model_dir, tmp_path, capsys):
    disk = tmp_path / "ro"
    mounted = mount_tmpfs(disk, "size=1m,ro")
    try:
        target = disk / "run" if mounted else Path("/sys/alignment-run")
        assert main(run_args(tiny_model_dir, target)) == 2
        err = capsys.readouterr().err
        assert f"error: recipe error at 'output_dir': '{target}' cannot be written (" in err
        reasons = ["read-only file system"] if mounted else ["permission denied", "operation not permitted"]
        assert any(f": {reason}); choose another output_dir" in err for reason in reasons), err
        assert "Loading weights" not in err
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)])


def test_library_write_errors_are_recognised_with_and_without_an_errno():
    assert write_failure(OSError(errno.ENOSPC, "No space left on device", "/x/model.safetensors")) == (
        "no space left on device",
        "/x/model.safetensors",
    )
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert write_failure(outer) == ("read-only file system", None)
    torch_short_write = RuntimeError(
        "[enforce fail at inline_container.cc:672] . unexpected pos 1384256 vs 1384148"
    )
    assert write_failure(torch_short_write) == ("a write failed", None)
    assert write_failure(RuntimeError("Error while serializing: IoError(Os { kind: StorageFull })")) == (
        "no space left on device",
        None,
    )
    assert write_failure(ValueError("a column is missing")) is None
