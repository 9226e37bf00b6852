"""A run never overwrites another one by accident, and two runs never share an output directory (issue 14,
item 2): refusal with the ways on, `--overwrite` clearing the whole directory, resume allowed, the lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from alignment.cli import main
from alignment.errors import RecipeError
from alignment.output_dir import LOCK_FILE, describe_run, output_lock


def run_args(tiny_model_dir, out) -> list[str]:
    return [
        "recipes/dpo.yaml", f"model.name_or_path={tiny_model_dir}", "data.train.args.n=16",
        "training.max_steps=2", "training.per_device_train_batch_size=4", "evaluation.num_prompts=4",
        "evaluation.max_new_tokens=8", f"output_dir={out}",
    ]  # fmt: skip


@pytest.mark.integration
def test_a_second_run_is_refused_and_overwrite_replaces_the_whole_directory(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(run_args(tiny_model_dir, out)) == 0
    first = json.loads((out / "eval.json").read_text())
    (out / "eval_best_of_n.png").write_bytes(b"from an older run")  # a file this run would not write again
    capsys.readouterr()
    assert main(run_args(tiny_model_dir, out)) == 2
    err = capsys.readouterr().err
    assert f"'{out}' already holds a finished run (trainer_state.json, model.safetensors, eval.json" in err
    assert "training.resume_from_checkpoint=last" in err and "--overwrite" in err
    assert json.loads((out / "eval.json").read_text()) == first  # untouched
    assert main([*run_args(tiny_model_dir, out), "training.resume_from_checkpoint=last"]) == 0  # allowed
    assert main([*run_args(tiny_model_dir, out), "--overwrite", "training.learning_rate=1e-3"]) == 0
    assert not (out / "eval_best_of_n.png").exists()  # the old run went entirely
    assert not (out / LOCK_FILE).exists()


def test_describe_run_tells_finished_from_partial(tmp_path):
    assert describe_run(tmp_path / "missing") is None
    (tmp_path / "notes.txt").write_text("mine")
    assert describe_run(tmp_path) is None  # a directory without a run is free
    (tmp_path / "recipe.yaml").write_text("x")
    assert describe_run(tmp_path) == "a partial run (recipe.yaml only: started, nothing saved yet)"
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-16").mkdir()
    assert describe_run(tmp_path) == "a partial run (checkpoint-16)"
    (tmp_path / "eval.json").write_text("{}")
    assert describe_run(tmp_path) == "a finished run (eval.json, checkpoint-16)"


def test_a_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, caplog):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": other.pid, "host": socket.gethostname(), "started": "2026-12-02 10:00:00"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(RecipeError, match=f"is in use by another run \\(pid {other.pid} on this host"):
            with output_lock(tmp_path):
                pass
        assert main(["recipes/dpo.yaml", f"output_dir={tmp_path}"]) == 2  # named before anything loads
        # a lock from another host cannot be checked: refused, naming the file to delete
        (tmp_path / LOCK_FILE).write_text(json.dumps({**lock, "host": "elsewhere"}))
        with pytest.raises(RecipeError, match=f"on host elsewhere.*delete {tmp_path / LOCK_FILE}"):
            with output_lock(tmp_path):
                pass
    finally:
        other.kill()
        other.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps(lock))  # its process is gone now
    with output_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "taking over a stale lock" in caplog.text and not (tmp_path / LOCK_FILE).exists()


@pytest.mark.integration
def test_a_run_that_fails_after_start_is_marked_failed(tiny_model_dir, tmp_path, capsys):
    from alignment.output_dir import read_status

    out = tmp_path / "run"
    args = [*run_args(tiny_model_dir, out), "evaluation.reward={kind: function, function: failing_rewards:boom}"]
    with pytest.raises(RuntimeError, match="the judge fell over"):
        main(args)
    status = read_status(out)
    assert status["status"] == "failed" and status["error"] == "RuntimeError: the judge fell over"
    assert (out / "recipe.yaml").exists() and not (out / "eval.json").exists()
    capsys.readouterr()
    assert main(args) == 2
    assert "holds a failed run (trainer_state.json, model.safetensors" in capsys.readouterr().err
    assert "RuntimeError: the judge fell over" in describe_run(out)
