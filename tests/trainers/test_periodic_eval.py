"""`evaluation.every_n_steps`: the history file, the win-rate-vs-KL path in the plot, and no effect on training."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from alignment.eval.history import append_history, keep_history_until, read_history
from alignment.recipe.load import recipe_from_dict


def test_history_replaces_a_step_and_a_resume_drops_later_steps(tmp_path):
    for step, win in ((2, 0.4), (4, 0.5), (6, 0.6), (4, 0.55)):
        append_history(tmp_path, step, {"win_rate": win, "kl": step / 10})
    assert [(r["step"], r["win_rate"]) for r in read_history(tmp_path)] == [(2, 0.4), (4, 0.55), (6, 0.6)]
    keep_history_until(tmp_path, 4)  # resumed from checkpoint-4: step 6 is trained again
    assert [r["step"] for r in read_history(tmp_path)] == [2, 4]
    keep_history_until(tmp_path, 0)  # a fresh run
    assert read_history(tmp_path) == []


@pytest.mark.integration
def test_every_n_steps_writes_history_and_plots_the_path(tiny_model_dir, tmp_path, monkeypatch):
    """An online DPO run of 6 steps evaluated every 2: three history rows (steps 2, 4, 6) carrying every
    eval.json key, the final plot given that path, and the trained weights identical to the same run
    without periodic evaluation (evaluating forks the RNG and restores train mode)."""
    from test_online import online_recipe  # same directory (pytest prepends it to sys.path)

    import alignment.eval.gold as gold
    from alignment.run import run_recipe

    plotted = []
    real_plot = gold.plot_eval
    monkeypatch.setattr(gold, "plot_eval", lambda *a: plotted.append(a[4]) or real_plot(*a))  # a[4]: history
    periodic, plain = tmp_path / "periodic", tmp_path / "plain"
    # an earlier run's history in the same directory: a new run there needs --overwrite, which removes it
    append_history(plain, 99, {"win_rate": 0.9, "kl": 9.0})
    for out, every in ((periodic, 2), (plain, None)):
        raw = online_recipe(
            tiny_model_dir, out, training={"max_steps": 6}, evaluation={"every_n_steps": every}
        )
        assert run_recipe(recipe_from_dict(raw), overwrite=True) == 0

    history = read_history(periodic)
    assert [row["step"] for row in history] == [2, 4, 6]
    final = json.loads((periodic / "eval.json").read_text())
    for row in history:
        assert set(row) == {"step", *final}
        assert 0 <= row["win_rate"] <= 1 and row["kl"] > 0
    assert len({row["kl"] for row in history}) == 3  # the policy moved between evaluations
    assert plotted[0] == history  # the final figure draws the path of this run
    assert (periodic / "eval_rewards.png").stat().st_size > 0
    assert plotted[1] == []  # a run without periodic evaluation draws no path, not an earlier run's

    a, b = load_file(str(periodic / "model.safetensors")), load_file(str(plain / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_zero3_launch_is_refused_before_any_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    """Under a ZeRO-3 launch no rank holds the whole model to sample from: exit-2 error naming the key."""
    from test_online import online_recipe

    from alignment.errors import RecipeError
    from alignment.eval.periodic import periodic_evaluation
    from alignment.eval.run import RecipeEvaluator

    recipe = recipe_from_dict(online_recipe(tiny_model_dir, tmp_path, evaluation={"every_n_steps": 2}))
    evaluator = RecipeEvaluator(recipe, tokenizer=None, uses_adapter=False)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(RecipeError, match="every_n_steps.*ZeRO-3") as err:
        periodic_evaluation(evaluator)
    assert err.value.exit_code == 2
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert periodic_evaluation(evaluator) is not None


@pytest.mark.parametrize(
    "override",
    [
        "evaluation.reference=/nonexistent/model",
        "evaluation.reward={kind: function, function: no_such.module:f}",
        "evaluation.reward={kind: model, name_or_path: /no/such/reward-model}",
    ],
)
def test_a_bad_judge_or_reference_stops_the_run_before_the_policy_loads(tmp_path, monkeypatch, capsys, override):
    """The evaluator is built before training: its mistakes cost no training (they used to surface after it)."""
    import alignment.policy.build
    from alignment.cli import main

    def forbidden(recipe):
        raise AssertionError("the policy was built")

    monkeypatch.setattr(alignment.policy.build, "build_policy", forbidden)
    argv = ["recipes/dpo.yaml", "data.train.args.n=16", override, f"output_dir={tmp_path / 'out'}"]
    assert main(argv) == 2
    assert override.split("=")[0] in capsys.readouterr().err
