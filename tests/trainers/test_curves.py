"""training_curves.png is drawn from what the run logged, panel by panel, and not at all without a logged step."""

from __future__ import annotations

import json

from alignment.eval.history import append_history
from alignment.trainers.curves import CURVES_FILE, plot_training_curves


def test_curves_are_drawn_from_the_log_and_the_evaluation_history(tmp_path):
    logs = [{"step": s, "loss": 0.7 - 0.01 * s, "rewards/margins": 0.1 * s, "grad_norm": float("nan")} for s in (1, 2, 3)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [*logs, {"step": 3, "train_runtime": 1.0}]}))
    append_history(tmp_path, 2, {"win_rate": 0.6, "kl": 0.3})
    path = plot_training_curves(tmp_path, "dpo: run")
    assert path == tmp_path / CURVES_FILE and path.stat().st_size > 0


def test_no_logged_step_draws_nothing(tmp_path):
    assert plot_training_curves(tmp_path) is None  # no trainer_state.json (an evaluation-only run)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 3, "train_runtime": 1.0}]}))
    assert plot_training_curves(tmp_path) is None and not (tmp_path / CURVES_FILE).exists()
