"""`toy-rm` (issue 14, item 13): the proxy reward model the online recipes name, built once on first use into
the user cache, keyed by its recipe and base weights, and reused after; the recipe is recipes/reward_model.yaml's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.models import resolve_model_path
from alignment.recipe.load import comparable_recipe, load_recipe, to_dict
from alignment.toy import reward_model

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_the_packaged_recipe_is_the_documented_one():
    packaged = comparable_recipe(to_dict(load_recipe(reward_model.RECIPE)))
    documented = comparable_recipe(to_dict(load_recipe(REPO / "recipes" / "reward_model.yaml")))
    assert packaged == documented


@pytest.fixture
def tiny_toy_rm(tiny_model_dir, tmp_path, monkeypatch):
    """toy-rm made from the tiny Llama and 40 hand-written pairs (a few seconds to build), in a fresh cache."""
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"the cat {i}", "chosen": " likes a tree.", "rejected": " bad bad bad"} for i in range(40)
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "toy_rm.yaml"
    settings = {
        "method": {"name": "reward_model"},
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"train": {"name": str(pairs)}},
        "training": {"max_steps": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-3},
    }
    recipe.write_text(json.dumps(settings))  # JSON is YAML
    monkeypatch.setattr(reward_model, "RECIPE", recipe)
    monkeypatch.setattr(reward_model, "BASE_WEIGHTS", tiny_model_dir / "model.safetensors")
    return recipe, settings


def test_toy_rm_is_built_on_first_use_then_reused_and_rebuilt_when_its_recipe_changes(tiny_toy_rm, caplog):
    from alignment.rewards.model import RewardModelScorer

    recipe, settings = tiny_toy_rm
    where = Path(resolve_model_path("toy-rm"))
    assert not reward_model.is_built(where)
    assert reward_model.ensure_toy_rm() == where and reward_model.is_built(where)
    assert "toy-rm: building the toy proxy reward model once" in caplog.text
    stamp = (where / "model.safetensors").stat().st_mtime_ns
    caplog.clear()
    assert reward_model.ensure_toy_rm() == where
    assert (where / "model.safetensors").stat().st_mtime_ns == stamp and "building" not in caplog.text
    scores = RewardModelScorer.from_pretrained("toy-rm").score(["the cat 1"], [" likes a tree."])
    assert len(scores) == 1

    settings["training"]["learning_rate"] = 2e-3
    recipe.write_text(json.dumps(settings))
    assert Path(resolve_model_path("toy-rm")) != where  # a new key: the next use builds it afresh


def test_a_failed_build_says_so_and_leaves_no_model_behind(tiny_toy_rm):
    recipe, settings = tiny_toy_rm
    settings["data"]["train"]["name"] = str(recipe.parent / "missing.jsonl")
    recipe.write_text(json.dumps(settings))
    with pytest.raises(reward_model.ToyBuildFailed, match=r"toy-rm: building the toy reward model failed \(exit 2"):
        reward_model.ensure_toy_rm()
    assert not reward_model.is_built(reward_model.toy_rm_dir())


def test_an_online_recipe_dry_run_on_a_fresh_machine_says_toy_rm_will_be_built(tmp_path, monkeypatch, capsys):
    from alignment.cli import main

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path / "cache"))
    assert main(["recipes/online_dpo.yaml", "data.train.args.n=64", "--dry-run"]) == 0
    assert "note: toy-rm is not built yet; the run builds it first (about 5 min, once)" in capsys.readouterr().out
