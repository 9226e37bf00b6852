"""A real study on the tiny model, through the command line: 2 arms × 2 seeds, the offline arm's step count
read from the online arm's online_stats.json. Interrupted during its third run (SIGINT, as Ctrl-C), rerun:
it continues with that run and leaves the first two alone. Then the same study as printed commands run one
by one and `--collect`: the same reports. Then a changed arm: only its runs run again."""

from __future__ import annotations

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.trainers.test_online import online_recipe  # noqa: I001 (the repository root is on sys.path under `python -m pytest`)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600


def environment() -> dict[str, str]:
    # one thread everywhere: the orchestrated runs and the hand-run commands compute bit-identical numbers
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def alignment(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignment", *args],
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def study_file(tiny_model_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    online = online_recipe(tiny_model_dir, root / "unused", evaluation={"every_n_steps": 2})
    (root / "online.yaml").write_text(yaml.safe_dump(online))
    pairs = root / "pairs.jsonl"
    rows = [
        {"prompt": f"Q: question {i}?\nA:", "chosen": " a good answer.", "rejected": " bad."}
        for i in range(24)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    offline = {
        **online,
        "method": {"name": "dpo", "beta": 0.1},
        "data": {**online["data"], "train": {"name": str(pairs)}},
    }
    del offline["sampling"], offline["reward"]
    (root / "offline.yaml").write_text(yaml.safe_dump(offline))
    study = {
        "output_dir": str(root / "out"),
        "seeds": [0, 1],
        "arms": [
            {"name": "online", "recipe": "online.yaml"},
            {
                "name": "offline",
                "recipe": "offline.yaml",
                "derived": {
                    "training.max_steps": {"from": "online", "file": "online_stats.json", "key": "steps"}
                },
            },
        ],
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def marker(study_file: Path, run: str) -> dict | None:
    path = study_file.parent / "out" / run / "study_run.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module")
def interrupted_and_resumed(study_file):
    """Run the study, Ctrl-C it during its third run, rerun it; returns (first output, second output)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "alignment", "study", str(study_file)],
        cwd=REPO,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "[3/4] offline-s0 started" in line:
            process.send_signal(signal.SIGINT)
    first = "".join(lines)
    assert process.wait(timeout=TIMEOUT) == 130, first
    before = {run: marker(study_file, run) for run in ("online-s0", "online-s1", "offline-s0")}
    second = alignment("study", str(study_file))
    assert second.returncode == 0, second.stdout + second.stderr
    return first, before, second.stdout


def test_ctrl_c_keeps_finished_runs_and_a_rerun_continues_with_the_interrupted_one(
    study_file, interrupted_and_resumed
):
    first, before, second = interrupted_and_resumed
    assert "[1/4] online-s0 finished" in first and "[2/4] online-s1 finished" in first
    assert "interrupted: 2 of 4 runs finished and kept; 1 stopped (offline-s0)" in first
    assert before["online-s0"] and before["online-s1"] and before["offline-s0"] is None
    # the rerun keeps the first two untouched and starts with the third
    assert "2 finished already, 2 to run" in second
    assert "online-s0 finished already: kept" in second and "online-s0 started" not in second
    assert second.index("[3/4] offline-s0 started") < second.index("[4/4] offline-s1 started")
    for run in ("online-s0", "online-s1"):
        assert marker(study_file, run) == before[run]
    # the derived value: the offline run trained as many steps as its online twin
    out = study_file.parent / "out"
    stats = json.loads((out / "online-s0" / "online_stats.json").read_text())
    saved = yaml.safe_load((out / "offline-s0" / "recipe.yaml").read_text())
    assert saved["training"]["max_steps"] == stats["steps"] == 3
    assert json.loads((out / "offline-s0" / "trainer_state.json").read_text())["global_step"] == 3


def test_study_reports_hold_every_run(study_file, interrupted_and_resumed):
    out = study_file.parent / "out"
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [(r["run"], r["arm"], r["seed"]) for r in rows] == [
        ("online-s0", "online", "0"),
        ("online-s1", "online", "1"),
        ("offline-s0", "offline", "0"),
        ("offline-s1", "offline", "1"),
    ]
    for row in rows:  # every scalar eval.json key, and the wall time
        result = json.loads((out / row["run"] / "eval.json").read_text())
        assert float(row["win_rate"]) == result["win_rate"] and float(row["kl"]) == result["kl"]
        assert float(row["pairwise_accuracy"]) == result["pairwise_accuracy"]
        assert float(row["wall_time_s"]) == marker(study_file, row["run"])["wall_time_s"] > 0
    md = (out / "study.md").read_text()
    win = [float(r["win_rate"]) for r in rows[:2]]
    mean, sd = sum(win) / 2, abs(win[0] - win[1]) / 2**0.5
    assert f"| online | 2 | {mean:.3f} ± {sd:.3f}" in md.replace("**", "")
    assert (out / "frontier.png").stat().st_size > 0 and (
        out / "classifier_vs_generator.png"
    ).stat().st_size > 0


def without_wall_time(text: str) -> list[list[str]]:
    """A markdown table or CSV without its last column (wall time) and its bold marks."""
    sep = "," if "," in text.splitlines()[0] else "|"
    return [line.replace("**", "").split(sep)[:-2] for line in text.splitlines() if sep in line]


def test_printed_commands_then_collect_give_the_same_reports(study_file, interrupted_and_resumed, tmp_path):
    other = f"output_dir={tmp_path / 'by_hand'}"
    printed = alignment("study", str(study_file), other, "--print-commands", "--launcher", sys.executable)
    assert printed.returncode == 0, printed.stderr
    commands = [line for line in printed.stdout.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 4
    early = subprocess.run(
        shlex.split(commands[2]), cwd=REPO, env=environment(), capture_output=True, text=True
    )
    assert early.returncode == 2 and "needs run 'online-s0' to have finished first" in early.stderr
    for command in commands:
        done = subprocess.run(
            shlex.split(command), cwd=REPO, env=environment(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    collected = alignment("study", str(study_file), other, "--collect")
    assert collected.returncode == 0, collected.stderr
    here, there = study_file.parent / "out", tmp_path / "by_hand"
    for name in ("study.csv", "study.md"):
        assert without_wall_time((here / name).read_text()) == without_wall_time((there / name).read_text())
    # every number agrees bit for bit, not only as printed
    for run in ("online-s0", "offline-s1"):
        a = json.loads((here / run / "eval.json").read_text())
        b = json.loads((there / run / "eval.json").read_text())
        assert a == b


def test_a_changed_arm_runs_again_and_the_others_are_kept(study_file, interrupted_and_resumed):
    before = {run: marker(study_file, run) for run in ("online-s0", "online-s1", "offline-s0", "offline-s1")}
    changed = study_file.with_name("changed.yaml")
    study = yaml.safe_load(study_file.read_text())
    study["arms"][1]["overrides"] = {"method.beta": 0.2}
    changed.write_text(yaml.safe_dump(study, sort_keys=False))
    result = alignment("study", str(changed))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 finished already, 2 to run" in result.stdout
    for run in ("online-s0", "online-s1"):
        assert marker(study_file, run) == before[run]
    for run in ("offline-s0", "offline-s1"):
        assert (
            marker(study_file, run)["recipe"]["method"]["beta"]
            == 0.2
            != before[run]["recipe"]["method"]["beta"]
        )


@pytest.mark.deepspeed
def test_a_two_process_launch_runs_the_study_in_its_process_group(study_file, tmp_path):
    """`accelerate launch --num_processes 2 -m alignment study ...`: every run in turn on both processes
    (ZeRO-2 over gloo), the derived value read after the run it names finished on every process."""
    from tests.trainers.launching import free_port

    out = tmp_path / "zero2"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "recipes" / "accelerate" / "zero2.yaml"),
        "--main_process_port", str(free_port()),
        "-m", "alignment", "study", str(study_file), "seeds=[0]", f"output_dir={out}",
        "training.per_device_train_batch_size=2",
    ]  # fmt: skip
    env = {k: v for k, v in environment().items() if not k.startswith("ACCELERATE_")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("[1/2] online-s0") == 1  # the main process prints the progress
    stats = json.loads((out / "online-s0" / "online_stats.json").read_text())
    state = json.loads((out / "offline-s0" / "trainer_state.json").read_text())
    assert state["global_step"] == stats["steps"] == 3
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [r["run"] for r in rows] == ["online-s0", "offline-s0"]
