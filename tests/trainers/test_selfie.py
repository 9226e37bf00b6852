"""Selfie runs on the session's tiny Llama: stage directories, self-labels that are the implicit reward,
resuming stage by stage, and the bad inputs that must stop before any model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk

from alignment.errors import DataError, RecipeError
from alignment.kinds.iterative import SelfieRun, stage_recipes
from alignment.recipe.load import load_recipe, recipe_from_dict

pytestmark = pytest.mark.integration


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def selfie_recipe(model_dir: Path, tmp_path: Path, prompts, *, pools=(12, 12), **sections) -> dict:
    """Seed: 8 pairs; pools of `pools` fresh prompts each, all from `prompts_for` (distinct)."""
    names = prompts(8 + sum(pools) + 40, seed=3)
    unique = list(dict.fromkeys(names))
    seed = [{"prompt": p, "chosen": " good answer.", "rejected": " bad."} for p in unique[:8]]
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    pool_specs, start = [], 8
    for i, n in enumerate(pools):
        rows = [{"prompt": p} for p in unique[start : start + n]]
        pool_specs.append({"name": write_jsonl(data_dir / f"pool{i}.jsonl", rows)})
        start += n
    raw = {
        "method": {"name": "selfie", "beta": 0.1, "dnd_lambdas": [0.5, 0.25], "seed_num_train_epochs": 1},
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "train": {"name": write_jsonl(data_dir / "seed.jsonl", seed)},
            "pools": pool_specs,
            "max_length": 64,
            "max_prompt_length": 24,
        },
        "sampling": {"max_new_tokens": 12, "temperature": 1.0, "seed": 0},
        "training": {
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 4,
            "logging_steps": 1,
            "save_steps": 1,
            "seed": 0,
            "disable_tqdm": True,
        },
        "evaluation": {"num_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 8},
        "output_dir": str(tmp_path / "selfie"),
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


def run(raw: dict) -> int:
    from alignment.run import run_recipe

    return run_recipe(recipe_from_dict(raw))


def test_stage_recipes_chain_models_judges_and_lambdas(tiny_model_dir, tmp_path, prompts_for):
    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for, pools=(12, 12, 12))
    raw["method"].update(dnd_lambdas=[0.5, 0.25, 0.125], judge_reference="previous")
    stages = stage_recipes(recipe_from_dict(raw))
    root = tmp_path / "selfie"
    assert [s.method.name for s in stages] == [
        "dpo",
        "selfie_iteration",
        "selfie_iteration",
        "selfie_iteration",
    ]
    assert stages[0].training["num_train_epochs"] == 1 and stages[0].model.name_or_path == str(tiny_model_dir)
    for i in (1, 2, 3):
        s = stages[i]
        assert s.model.name_or_path == str(root / f"iter_{i - 1}") and s.output_dir == str(root / f"iter_{i}")
        assert s.data.train.name == raw["data"]["pools"][i - 1]["name"] and s.data.pools == []
        assert s.evaluation.reference == str(tiny_model_dir)  # every stage against π_init
        assert s.method.params.dnd_lambda == [0.5, 0.25, 0.125][i - 1] and s.method.params.iteration == i
    # judge = the reference π_{i−1} was trained against: π_init for iteration 1, then iter_0 (π_0), iter_1 (π_1)
    assert [s.method.params.judge_reference for s in stages[1:]] == [
        str(tiny_model_dir),
        str(root / "iter_0"),
        str(root / "iter_1"),
    ]
    raw["method"].update(dnd=False, refinement=True, judge_reference="initial")
    stages = stage_recipes(recipe_from_dict(raw))
    assert {s.method.params.dnd_lambda for s in stages[1:]} == {0.0}
    assert {s.method.params.judge_reference for s in stages[1:]} == {str(tiny_model_dir)}
    assert {s.model.reference for s in stages} == {"auto"}


def test_run_writes_stages_whose_labels_are_the_implicit_reward(
    tiny_model_dir, tmp_path, prompts_for, completion_logps
):
    from alignment.models import load_causal_lm

    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for)
    assert run(raw) == 0
    root = tmp_path / "selfie"
    for i in (0, 1, 2):
        stage = root / f"iter_{i}"
        assert (stage / "model.safetensors").exists() and (stage / "eval.json").exists()
        assert load_recipe(stage / "recipe.yaml").method.name == ("dpo" if i == 0 else "selfie_iteration")
    summary = json.loads((root / "selfie_summary.json").read_text())
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and (root / "selfie_summary.png").exists()
    assert all(0 <= r["win_rate"] <= 1 for r in rows) and all("judge_accuracy" in r for r in rows[1:])
    assert "| 2 |" in (root / "selfie_summary.md").read_text()
    final = json.loads((root / "eval.json").read_text())  # the run's eval.json: its final policy's
    assert final.pop("final_stage") == "iter_2"
    assert final == json.loads((root / "iter_2" / "eval.json").read_text())

    # iteration 2's pairs: judged by iter_1 against π_init, chosen = the higher implicit reward
    pairs = load_from_disk(str(root / "iter_2" / "self_labelled"))
    stats = json.loads((root / "iter_2" / "self_labels.json").read_text())
    assert stats["pairs"] == len(pairs) and stats["pairs"] + stats["ties_skipped"] == 12
    judge, initial = load_causal_lm(str(root / "iter_1")), load_causal_lm(str(tiny_model_dir))
    rows = pairs.select(range(4))
    for side in ("chosen", "rejected"):
        want = torch.tensor(
            completion_logps(judge, rows["prompt_input_ids"], rows[f"{side}_input_ids"])
        ) - torch.tensor(completion_logps(initial, rows["prompt_input_ids"], rows[f"{side}_input_ids"]))
        torch.testing.assert_close(
            torch.tensor(rows[f"{side}_score"], dtype=torch.float64), 0.1 * want.double(), atol=1e-4, rtol=0
        )
    assert all(c > r for c, r in zip(pairs["chosen_score"], pairs["rejected_score"]))
    gold_agree = [(c > r) + 0.5 * (c == r) for c, r in zip(pairs["chosen_gold"], pairs["rejected_gold"])]
    assert stats["judge_accuracy"] == pytest.approx(sum(gold_agree) / len(pairs))
    # trained from iter_1: the log shows refinement's figures
    logs = json.loads((root / "iter_2" / "trainer_state.json").read_text())["log_history"]
    assert any("selfie/tau" in h for h in logs)


def mtimes(root: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("iter_*/model.safetensors")}


def test_rerun_keeps_finished_stages_resumes_the_interrupted_one_and_redoes_changed_ones(
    tiny_model_dir, tmp_path, prompts_for, caplog
):
    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for)
    root = tmp_path / "selfie"
    assert run(raw) == 0
    first = mtimes(root)
    weights = (root / "iter_2" / "model.safetensors").read_bytes()

    caplog.set_level("INFO", logger="alignment")
    assert run(raw) == 0  # nothing left to do
    assert mtimes(root) == first and "iter_2 already finished" in caplog.text

    # iter_2 killed after its checkpoint-1: resumes there and ends with the same weights
    for name in ("trainer_state.json", "eval.json", "model.safetensors"):
        (root / "iter_2" / name).unlink()
    for extra in sorted((root / "iter_2").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[1:]:
        shutil.rmtree(extra)
    caplog.clear()
    assert run(raw) == 0
    assert "resuming iter_2" in caplog.text and "iter_1 already finished" in caplog.text
    assert "self-labelled pairs: " in caplog.text  # loaded, not sampled again
    assert (root / "iter_2" / "model.safetensors").read_bytes() == weights

    # killed while evaluating iter_2: only the evaluation runs again
    (root / "iter_2" / "eval.json").unlink()
    trained = mtimes(root)
    caplog.clear()
    assert run(raw) == 0
    assert "iter_2 trained but not evaluated" in caplog.text and (root / "iter_2" / "eval.json").exists()
    assert mtimes(root) == trained

    # killed after labelling, before any checkpoint: runs again in place on its saved pairs
    for path in (root / "iter_2").iterdir():
        if path.name not in ("recipe.yaml", "self_labelled", "self_labels.json"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    caplog.clear()
    assert run(raw) == 0
    assert "self-labelled pairs: " in caplog.text and "resuming" not in caplog.text
    assert (root / "iter_2" / "model.safetensors").read_bytes() == weights  # the same seeded run again

    # a changed refinement setting: the seed stage is kept, both iterations are redone
    raw["method"]["alpha"] = 0.2
    caplog.clear()
    assert run(raw) == 0
    again = mtimes(root)
    assert again["iter_0"] == first["iter_0"] and again["iter_1"] != first["iter_1"]
    assert load_recipe(root / "iter_2" / "recipe.yaml").method.params.alpha == 0.2


@pytest.fixture
def no_model_loads(monkeypatch):
    import transformers

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)


def test_overlapping_pools_fail_before_any_model_loads(tiny_model_dir, tmp_path, prompts_for, no_model_loads):
    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for)
    raw["data"]["pools"][1] = raw["data"]["pools"][0]
    with pytest.raises(DataError, match=r"data.pools\[1\] shares 12 prompt\(s\) with data.pools\[0\]"):
        run(raw)
    raw["data"]["pools"][1] = raw["data"]["train"]  # the seed's prompts
    with pytest.raises(DataError, match=r"data.pools\[1\] shares 8 prompt\(s\) with data.train"):
        run(raw)
    assert not (tmp_path / "selfie").exists()


def test_pool_smaller_than_a_batch_fails_before_any_model_loads(
    tiny_model_dir, tmp_path, prompts_for, no_model_loads
):
    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for, pools=(12, 3))
    with pytest.raises(DataError, match="the prompt pool has 3 prompts, fewer than one optimizer step needs"):
        run(raw)


@pytest.mark.parametrize(
    "change, path",
    [
        ({"method": {"dnd_lambdas": [0.5]}}, "method.dnd_lambdas"),
        ({"model": {"lora": {"enabled": True}}}, "model.lora.enabled"),
        ({"data": {"pools": []}}, "data.pools"),
        (
            {"training": {"resume_from_checkpoint": "somewhere/checkpoint-3"}},
            "training.resume_from_checkpoint",
        ),
        ({"model": {"revision": "v1"}}, "model.revision"),
    ],
)
def test_recipe_mistakes_are_named(tiny_model_dir, tmp_path, prompts_for, change, path):
    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for)
    for section, values in change.items():
        raw[section] = {**raw[section], **values}
    with pytest.raises(RecipeError) as err:
        SelfieRun(recipe_from_dict(raw))
    assert err.value.path == path


def test_pools_belong_to_selfie_only(tmp_path):
    with pytest.raises(RecipeError, match="only Selfie reads prompt pools") as err:
        recipe_from_dict(
            {"method": "dpo", "data": {"train": "toy-paired", "pools": [{"name": "toy-prompts"}]}}
        )
    assert err.value.path == "data.pools"


@pytest.mark.vllm
def test_vllm_backend_samples_from_the_previous_iteration(
    vllm_sampler, tiny_model_dir, tmp_path, prompts_for
):
    """`sampling.backend: vllm`: the session engine (started from the judge reference, π_init) samples each pool
    after the judged model's weights were pushed into it, so after iteration 2's labelling it holds π_1."""
    from transformers import AutoModelForCausalLM

    from alignment.policy.batching import build_packed_batch
    from alignment.policy.logps import sequence_logps
    from alignment.sampling.base import prompt_token_ids

    raw = selfie_recipe(tiny_model_dir, tmp_path, prompts_for, sampling={"backend": "vllm"})
    raw["evaluation"] = {"enabled": False}
    assert run(raw) == 0
    root = tmp_path / "selfie"
    assert all(json.loads((root / f"iter_{i}" / "self_labels.json").read_text())["pairs"] > 0 for i in (1, 2))
    tokenizer = vllm_sampler.tokenizer
    prompt_ids = prompt_token_ids(tokenizer, ["the cat", "a red dog likes"])
    completions = [
        tokenizer(t, add_special_tokens=False)["input_ids"] for t in (" runs to the tree.", " yes.")
    ]
    engine = torch.tensor(vllm_sampler.sequence_logprobs(prompt_ids, completions), dtype=torch.float64)

    def logps(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        batch = build_packed_batch(prompt_ids, [[c] for c in completions], pad_token_id=0, pack_length=64)
        with torch.no_grad():
            return sequence_logps(model, batch)[:, 0].double()

    torch.testing.assert_close(engine, logps(root / "iter_1"), rtol=0, atol=1e-3)
    assert (engine - logps(tiny_model_dir)).abs().max() > 1e-3
