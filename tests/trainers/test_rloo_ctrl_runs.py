"""Short RLOO and CTRL runs on the session's tiny Llama (the gold reward as the reward): the policy-gradient step
trains and logs, best-/worst-of-N evaluation reaches eval.json and its plot, reference rollouts are cached
across runs, and a single sample per prompt stops the run before any model loads."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_online import online_recipe

from alignment.errors import RecipeError
from alignment.recipe.load import recipe_from_dict

pytestmark = pytest.mark.integration


def short(model_dir, out, method: dict, **sections) -> dict:
    raw = online_recipe(model_dir, out, sampling={"n": 3}, **sections)
    raw["method"] = method
    raw["model"]["reference_cache_dir"] = str(out.parent / "refcache")
    return raw


def run(raw: dict) -> int:
    from alignment.run import run_recipe

    return run_recipe(recipe_from_dict(raw))


def test_rloo_trains_and_evaluates_best_and_worst_of_n(tiny_model_dir, tmp_path):
    out = tmp_path / "rloo"
    evaluation = {"samples_per_prompt": 4, "best_of_n": [1, 2, 4]}
    assert run(short(tiny_model_dir, out, {"name": "rloo", "beta": 0.1}, evaluation=evaluation)) == 0
    before, after = (
        load_file(str(tiny_model_dir / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(logs) == 3 and all("rloo/kl_penalty" in h and "rloo/baseline" in h for h in logs)
    result = json.loads((out / "eval.json").read_text())
    assert all(0 <= result[f"{kind}_of_{n}_win_rate"] <= 1 for kind in ("best", "worst") for n in (1, 2, 4))
    assert result["best_of_1_win_rate"] == result["worst_of_1_win_rate"]
    assert (out / "eval_best_of_n.png").exists()


def test_ctrl_reuses_cached_reference_rollouts(tiny_model_dir, tmp_path, caplog):
    method = {"name": "ctrl", "transform": "bon", "t": 5.0, "reference_samples": 4}
    caplog.set_level("INFO", logger="alignment")
    for name in ("first", "second"):
        assert run(short(tiny_model_dir, tmp_path / name, method, evaluation={"enabled": False})) == 0
    stats = [
        json.loads((tmp_path / n / "online_stats.json").read_text())["reference_rollouts"]
        for n in ("first", "second")
    ]
    assert [s["cache_hit"] for s in stats] == [False, True] and stats[0]["cache_file"] == stats[1][
        "cache_file"
    ]
    assert stats[0]["prompts"] == 16 and stats[0]["samples_per_prompt"] == 4
    assert "loaded from the cache" in caplog.text
    logs = [
        h
        for h in json.loads((tmp_path / "second" / "trainer_state.json").read_text())["log_history"]
        if "loss" in h
    ]
    assert all(0 <= h["ctrl/calibrated_mean"] <= 1 and 0 <= h["ctrl/transformed_mean"] <= 1 for h in logs)


def test_rloo_with_one_sample_per_prompt_stops_before_any_model_loads(tiny_model_dir, tmp_path, monkeypatch):
    import transformers

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    raw = short(tiny_model_dir, tmp_path / "one", {"name": "rloo"})
    raw["sampling"]["n"] = 1
    with pytest.raises(RecipeError, match="leave-one-out baseline needs >= 2 samples per prompt") as err:
        run(raw)
    assert err.value.path == "sampling.n"


def test_a_run_judged_by_gold_also_reports_the_reward_it_optimised(tiny_model_dir, tmp_path):
    """RLOO on a function reward (completion length), judged by gold: eval.json also holds the optimised
    reward's win rates under `optimised_reward/`, computed on the same samples."""
    out = tmp_path / "length"
    raw = short(
        tiny_model_dir,
        out,
        {"name": "rloo", "beta": 0.1},
        reward={"kind": "function", "function": "alignment_test_rewards:length"},
        evaluation={"samples_per_prompt": 4, "best_of_n": [1, 4]},
    )
    assert run(raw) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["reward"] == "gold"
    for key in ("win_rate", "best_of_4_win_rate", "worst_of_4_win_rate", "reward", "reference_reward"):
        assert f"optimised_reward/{key}" in result
    # the optimised reward is the completion length in characters: its mean over the policy's samples
    assert result["optimised_reward/reward"] > 0
