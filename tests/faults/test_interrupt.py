"""Ctrl-C during training (issue 14, item 3): the step finishes, a checkpoint is saved, the run says where
and how to resume and exits 130; the resumed run ends with the same weights as one never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.output_dir import read_status

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def command(tiny_model_dir, out) -> list[str]:
    return [
        sys.executable, "-m", "alignment", "recipes/dpo.yaml", f"model.name_or_path={tiny_model_dir}",
        "data.train.args.n=96", "training.max_steps=200", "training.per_device_train_batch_size=4",
        "training.logging_steps=1", "training.save_steps=1000", "evaluation.enabled=false", f"output_dir={out}",
    ]  # fmt: skip


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_sigint_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(tiny_model_dir, tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = subprocess.run(command(tiny_model_dir, straight), cwd=REPO, env=environment(), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    # the first SIGINT after the 3rd logged step: no checkpoint is due (save_steps 1000), the interrupt saves one
    process = subprocess.Popen(
        command(tiny_model_dir, broken), cwd=REPO, env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "'loss'" in line and sum("'loss'" in x for x in lines) == 3:
            process.send_signal(signal.SIGINT)
    log = "".join(lines)
    assert process.wait(timeout=600) == 130, log[-3000:]
    checkpoints = sorted(broken.glob("checkpoint-*"))
    assert len(checkpoints) == 1
    step = int(checkpoints[0].name.split("-")[1])
    assert 3 <= step < 200
    assert f"interrupted at step {step} of 200; checkpoint {broken}/checkpoint-{step}; resume with" in log
    assert "Traceback" not in log and not (broken / "model.safetensors").exists()
    assert read_status(broken)["status"] == "interrupted"

    resumed = subprocess.run(
        [*command(tiny_model_dir, broken), "training.resume_from_checkpoint=true"],
        cwd=REPO, env=environment(), capture_output=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert f"resuming from {broken}/checkpoint-{step} (step {step} of 200)" in resumed.stderr.decode()
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(broken / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_status(broken)["status"] == "finished"


def test_an_incomplete_checkpoint_is_named_with_the_newest_complete_one(tiny_model_dir, tmp_path, capsys):
    from alignment.cli import main

    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "alignment_state.json").write_text("{}")
    (out / "checkpoint-8").mkdir()  # saving was cut short: no alignment_state.json
    args = [*command(tiny_model_dir, out)[3:]]
    assert main([*args, f"training.resume_from_checkpoint={out}/checkpoint-8"]) == 2
    err = capsys.readouterr().err
    assert f"'{out}/checkpoint-8' is an incomplete checkpoint (no alignment_state.json" in err
    assert f"the newest complete one is {out}/checkpoint-4" in err
    (out / "checkpoint-4" / "alignment_state.json").unlink()
    assert main([*args, "training.resume_from_checkpoint=last"]) == 2
    assert "holds no complete checkpoint (checkpoint-N with alignment_state.json)" in capsys.readouterr().err
