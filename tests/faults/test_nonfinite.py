"""NaN/inf in training (issue 14, item 1): a non-finite step is skipped without touching the weights, too
many stop the run naming the step and the last good checkpoint, non-finite weights are never saved, and a
NaN loss is logged as NaN."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from alignment.cli import main
from alignment.output_dir import read_status
from alignment.trainers.base import PreferenceTrainer

pytestmark = pytest.mark.integration


def run_args(tiny_model_dir, out, *extra: str) -> list[str]:
    return [
        "recipes/dpo.yaml", f"model.name_or_path={tiny_model_dir}", "data.train.args.n=48",
        "training.max_steps=6", "training.per_device_train_batch_size=4", "training.logging_steps=1",
        "training.save_steps=1", "training.save_total_limit=10", "evaluation.enabled=false",
        f"output_dir={out}", *extra,
    ]  # fmt: skip


@pytest.fixture
def nan_loss_at(monkeypatch):
    """Make the training loss NaN at the given 1-based optimizer steps (as the logs number them)."""
    steps: set[int] = set()
    compute_loss = PreferenceTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        if model.training and self.state.global_step + 1 in steps:
            loss = loss * float("nan")
        return loss

    monkeypatch.setattr(PreferenceTrainer, "compute_loss", poisoned)
    return steps


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def logged_losses(folder) -> dict[int, float]:
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    return {row["step"]: row["loss"] for row in history if "loss" in row}


def test_a_nan_step_is_skipped_without_touching_the_weights(tiny_model_dir, tmp_path, nan_loss_at, caplog):
    nan_loss_at.update({2, 4})
    out = tmp_path / "run"
    assert main(run_args(tiny_model_dir, out)) == 0
    skipped = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert [m.split(":")[0] for m in skipped] == ["step 2", "step 4"]
    assert (
        "the loss was non-finite (NaN or inf); step skipped, weights unchanged (2 of at most 3" in skipped[1]
    )
    w = {step: weights(out / f"checkpoint-{step}") for step in range(1, 7)}
    same = {step: all(torch.equal(w[step][k], w[step - 1][k]) for k in w[step]) for step in range(2, 7)}
    assert same == {2: True, 3: False, 4: True, 5: False, 6: False}
    losses = logged_losses(out)
    assert math.isnan(losses[2]) and math.isnan(losses[4])  # logged as NaN, not 0 or a stale average
    assert all(math.isfinite(losses[s]) for s in (1, 3, 5, 6))
    assert read_status(out)["status"] == "finished"


def test_too_many_nan_steps_stop_the_run_naming_the_step_and_the_last_good_checkpoint(
    tiny_model_dir, tmp_path, nan_loss_at, capsys
):
    nan_loss_at.update({2, 3, 4, 5, 6})
    out = tmp_path / "run"
    assert main(run_args(tiny_model_dir, out, "training.max_nonfinite_steps=2")) == 1
    err = capsys.readouterr().err
    assert (
        "error: training stopped at step 4: the loss was non-finite (NaN or inf) again, after 2 skipped step(s) "
        "(2, 3; training.max_nonfinite_steps: 2); nothing was saved from it, and the last good checkpoint is "
        f"{out}/checkpoint-3. Lower training.learning_rate"
    ) in err
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert not (out / "model.safetensors").exists()
    assert read_status(out)["status"] == "failed"


def test_weights_made_non_finite_by_the_learning_rate_are_never_saved(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"  # the case: at 1e20 one step's update already overflows the weights
    assert main(run_args(tiny_model_dir, out, "training.learning_rate=1e20", "training.save_steps=2")) == 1
    err = capsys.readouterr().err
    assert (
        "error: training stopped at step 2: the weights became non-finite (NaN or inf); nothing was saved"
        in err
    )
    assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))
    assert read_status(out)["status"] == "failed"
