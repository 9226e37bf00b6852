"""study.csv / study.md / frontier from finished run directories written by hand: the mean ± sd over seeds,
the best per column, the KL-budget table and the frontier envelope against figures computed here."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import pytest

from alignment.recipe.load import comparable_recipe
from alignment.study.report import budget_table, envelope, frontier_at, frontier_points, write_reports
from alignment.study.runs import MARKER, is_finished, resolved_raw
from alignment.study.spec import load_study

DPO = """
method: {name: dpo, beta: 0.1}
model: {name_or_path: toy-base}
data: {train: {name: toy-paired, args: {n: 64}}}
output_dir: runs/x
"""


@pytest.fixture
def study(tmp_path: Path):
    (tmp_path / "dpo.yaml").write_text(DPO)
    path = tmp_path / "study.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            output_dir: {tmp_path / "out"}
            seeds: [0, 1]
            arms:
              - {{name: a, recipe: dpo.yaml, grid: {{method.beta: [0.1, 0.3]}}}}
              - {{name: b, recipe: dpo.yaml, overrides: {{method.name: ipo}}}}
            reports: {{columns: [win_rate, kl, {{key: length, best: min}}, wall_time_s]}}
            """
        )
    )
    return load_study(path)


def finish(study, name: str, result: dict, history: list[dict] = (), wall: float = 10.0) -> None:
    """Make `name` look like a finished run: eval.json, eval_history.jsonl and its study_run.json."""
    run = study.run(name)
    run.output_dir.mkdir(parents=True)
    (run.output_dir / "eval.json").write_text(
        json.dumps({**result, "seed": 1234, "examples": [{"prompt": "x"}]})
    )
    (run.output_dir / "eval_history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    marker = {"run": name, "wall_time_s": wall, "recipe": comparable_recipe(resolved_raw(study, run))}
    (run.output_dir / MARKER).write_text(json.dumps(marker))


def test_reports_from_finished_runs(study):
    finish(
        study,
        "a-beta0.1-s0",
        {"win_rate": 0.6, "kl": 1.0, "length": 10.0},
        [{"step": 5, "win_rate": 0.55, "kl": 0.4}],
        wall=10,
    )
    finish(
        study,
        "a-beta0.1-s1",
        {"win_rate": 0.7, "kl": 3.0, "length": 12.0},
        [{"step": 5, "win_rate": 0.65, "kl": 0.6}],
        wall=20,
    )
    finish(study, "a-beta0.3-s0", {"win_rate": 0.5, "kl": 0.2, "length": 9.0})
    finish(study, "b-s0", {"win_rate": 0.8, "kl": 5.0, "length": 20.0, "kl_sampled": math.nan}, wall=40)
    assert is_finished(study, study.run("b-s0")) and not is_finished(study, study.run("b-s1"))
    text, missing = write_reports(study)
    assert [r.name for r in missing] == ["a-beta0.3-s1", "b-s1"]

    rows = list(csv.DictReader((study.output_dir / "study.csv").open()))
    assert [r["run"] for r in rows] == ["a-beta0.1-s0", "a-beta0.1-s1", "a-beta0.3-s0", "b-s0"]
    assert rows[0]["seed"] == "0" and rows[0]["eval_seed"] == "1234" and rows[0]["method.beta"] == "0.1"
    assert rows[3]["method.beta"] == "" and rows[3]["kl_sampled"] == "nan" and "examples" not in rows[0]

    summary = text.split("Best win rate")[0]
    lines = {
        line.split(" | ")[0].lstrip("| "): line for line in summary.splitlines() if line.startswith("| ")
    }
    sd = math.sqrt((0.6 - 0.65) ** 2 + (0.7 - 0.65) ** 2)  # sample sd of two values
    assert (
        lines["a (beta 0.1)"]
        == f"| a (beta 0.1) | 2 | 0.650 ± {sd:.3f} | 2.00 ± 1.41 | 11.00 ± 1.41 | 15 ± 7 |"
    )
    # best: the highest win rate (b), the shortest length as asked (a, β 0.3), the least wall time; KL unmarked
    assert lines["b"] == "| b | 1 | **0.800** | 5.00 | 20.00 | 40 |"
    assert lines["a (beta 0.3)"] == "| a (beta 0.3) | 1 | 0.500 | 0.20 | **9.00** | **10** |"
    assert "Not finished: a-beta0.3-s1, b-s1" in text

    points = frontier_points(study, [r for r in study.runs if is_finished(study, r)])
    a = sorted((round(p["kl"], 6), round(p["win_rate"], 6), p["final"]) for p in points["a"])
    # β 0.1: step 5 averaged over seeds, then the final evaluations averaged; β 0.3: its one final point
    assert a == [(0.2, 0.5, True), (0.5, 0.6, False), (2.0, 0.65, True)]
    table = budget_table(points)
    assert "| a | **0.600** | **0.600** | **0.650** | **0.650** | 0.650 |" in table
    assert "| b | — | — | — | — | **0.800** |" in table
    assert (study.output_dir / "frontier.png").stat().st_size > 0


def test_envelope_keeps_only_points_nothing_beats_at_less_kl():
    points = [{"kl": k, "win_rate": w} for k, w in [(3, 0.7), (1, 0.6), (2, 0.55), (0.5, 0.62), (4, 0.9)]]
    assert envelope(points) == [(0.5, 0.62), (3, 0.7), (4, 0.9)]


def test_a_stale_directory_is_cleared_and_an_interrupted_one_resumes_from_its_checkpoint(study):
    import yaml

    from alignment.study.runs import prepare_directory

    run = study.run("a-beta0.1-s0")
    raw = resolved_raw(study, run)
    assert prepare_directory(run, raw) == "new"
    # interrupted after a checkpoint, same recipe: resume from it (and forget any old marker)
    (run.output_dir / "checkpoint-4").mkdir(parents=True)
    (run.output_dir / "checkpoint-4" / "alignment_state.json").write_text("{}")
    (run.output_dir / "recipe.yaml").write_text(yaml.safe_dump(raw))
    (run.output_dir / MARKER).write_text("{}")
    assert prepare_directory(run, raw) == "resume"
    assert (run.output_dir / "checkpoint-4").exists() and not (run.output_dir / MARKER).exists()
    # another recipe in the directory: cleared
    changed = {**raw, "method": {**raw["method"], "beta": 0.5}}
    assert prepare_directory(run, changed) == "cleared" and not run.output_dir.exists()
    # the same recipe without a complete checkpoint: cleared, the run starts again
    (run.output_dir / "checkpoint-2").mkdir(
        parents=True
    )  # no alignment_state.json (what DPO writes last): incomplete
    (run.output_dir / "recipe.yaml").write_text(yaml.safe_dump(raw))
    assert prepare_directory(run, raw) == "cleared" and not run.output_dir.exists()


def test_the_frontier_is_interpolated_along_the_envelope_only_inside_its_range():
    points = [{"kl": k, "win_rate": w} for k, w in [(1, 0.6), (3, 0.8), (2, 0.5)]]
    assert frontier_at(points, 2.0) == pytest.approx(0.7)  # between (1, 0.6) and (3, 0.8); (2, 0.5) is beaten
    assert frontier_at(points, 0.5) is None and frontier_at(points, 3.5) is None
