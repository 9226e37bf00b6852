"""Online trainer: best/worst pair building on hand-made samples, the loss against the offline objectives on the
same log-probs, a short run with the session's tiny Llama (gold reward as labeller, no reward model needed),
and — with a real vLLM engine — that every optimizer step's weights reach the engine (log-prob equality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.experience.labellers import RewardLabeller
from alignment.experience.selectors import SELECTORS
from alignment.experience.stage import make_experience
from alignment.methods.dpo import DPOObjective, DPOParams
from alignment.methods.ipo import IPOObjective, IPOParams
from alignment.methods.objective import StepContext
from alignment.policy.batching import build_packed_batch
from alignment.policy.logps import sequence_logps
from alignment.recipe.load import recipe_from_dict
from alignment.recipe.schema import method_spec
from alignment.sampling.base import Completions, SamplingParams


class FixedSampler:
    """Returns hand-made completions whatever it is asked."""

    def __init__(self, completions: Completions):
        self.completions = completions

    def generate(self, prompts, params):
        assert list(prompts) == self.completions.prompts
        return self.completions

    def load_weights(self, named_tensors):
        raise AssertionError("nothing to push")


def hand_made(tokenizer):
    prompts = ["the cat", "a dog", "blue tree"]
    texts = [["runs.", "eats.", "sees."], ["yes.", "no.", "then."], ["good.", "bad.", "big."]]
    ids = [
        [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in per]
        for per in texts
    ]
    return Completions(prompts=prompts, texts=texts, token_ids=ids, logprobs=None)


def test_pairs_are_best_and_worst_by_reward_and_ties_are_skipped(tiny_tokenizer):
    """Scores: prompt 0 (1, 3, 2) -> (1, 0); prompt 1 all 0.5 -> skipped; prompt 2 (−1, 4, −2) -> (1, 2)."""
    completions = hand_made(tiny_tokenizer)
    table = {
        ("the cat", "runs."): 1.0,
        ("the cat", "eats."): 3.0,
        ("the cat", "sees."): 2.0,
        ("a dog", "yes."): 0.5,
        ("a dog", "no."): 0.5,
        ("a dog", "then."): 0.5,
        ("blue tree", "good."): -1.0,
        ("blue tree", "bad."): 4.0,
        ("blue tree", "big."): -2.0,
    }

    class TableReward:
        def score(self, prompts, texts):
            return torch.tensor([table[p, t] for p, t in zip(prompts, texts)], dtype=torch.float64)

    exp = make_experience(
        completions.prompts,
        sampler=FixedSampler(completions),
        labeller=RewardLabeller(TableReward()),
        select=SELECTORS.get(method_spec("online_dpo").objective.selector),
        tokenizer=tiny_tokenizer,
        params=SamplingParams(n=3),
    )
    assert exp.skipped == 1 and exp.num_examples == 2
    ids = completions.token_ids
    assert exp.completion_ids == [[ids[0][1], ids[0][0]], [ids[2][1], ids[2][2]]]
    assert exp.prompt_ids == [
        tiny_tokenizer("the cat")["input_ids"],
        tiny_tokenizer("blue tree")["input_ids"],
    ]
    torch.testing.assert_close(exp.scores, torch.tensor([[3.0, 1.0], [4.0, -2.0]], dtype=torch.float64))
    metrics = exp.metrics()
    assert metrics["online/reward_chosen"] == 3.5 and metrics["online/reward_rejected"] == -0.5


@pytest.mark.parametrize(
    "method, offline, params",
    [("online_dpo", DPOObjective, DPOParams(beta=0.3)), ("online_ipo", IPOObjective, IPOParams(beta=0.2))],
)
def test_trainer_loss_equals_offline_objective(tiny_model, tiny_tokenizer, tmp_path, method, offline, params):
    """OnlineTrainer.compute_loss on a packed (prompt ids + sampled ids) batch = the offline objective's loss
    on `sequence_logps` of the policy and the frozen reference (IPO: with its length normalisation)."""
    import copy

    from transformers import TrainingArguments

    from alignment.sampling.hf import TransformersSampler
    from alignment.trainers.online import OnlineTrainer, PromptCollator

    reference = copy.deepcopy(tiny_model)
    with torch.no_grad():  # move the policy away from the reference so the margins are not 0
        for p in tiny_model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tiny_model.train()
    trainer = OnlineTrainer(
        model=tiny_model,
        args=TrainingArguments(output_dir=str(tmp_path), report_to="none", remove_unused_columns=False),
        train_dataset=None,
        data_collator=PromptCollator(),
        processing_class=tiny_tokenizer,
        objective=method_spec(method).objective(params),
        reference_mode="copy",
        ref_model=reference,
        sampler=TransformersSampler(tiny_model, tiny_tokenizer),
        labeller=lambda samples: None,
        sampling_params=SamplingParams(n=2),
        pack_length=64,
    )
    c = hand_made(tiny_tokenizer)
    prompt_ids = [tiny_tokenizer(p)["input_ids"] for p in c.prompts]
    pairs = [per[:2] for per in c.token_ids]
    batch = build_packed_batch(prompt_ids, pairs, pad_token_id=tiny_tokenizer.pad_token_id, pack_length=64)
    got = trainer.compute_loss(tiny_model, {"sequences": batch})
    with torch.no_grad():
        ref_logps = sequence_logps(reference, batch)
    want = offline(params).loss(
        sequence_logps(tiny_model, batch), ref_logps, StepContext(batch={"sequences": batch}, training=True)
    )
    torch.testing.assert_close(got, want.loss, rtol=0, atol=1e-6)
    assert want.loss.abs() > 0


def online_recipe(model_dir: Path, output_dir: Path, **sections) -> dict:
    raw = {
        "method": {"name": "online_dpo", "beta": 0.1},
        "model": {"name_or_path": str(model_dir)},
        "data": {
            "train": {"name": "toy-prompts", "args": {"n": 16}},
            "max_length": 96,
            "max_prompt_length": 40,
        },
        "sampling": {"n": 2, "max_new_tokens": 12, "seed": 0},
        "reward": {"kind": "gold"},  # tests label with the gold reward: no trained reward model needed
        "training": {
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 4,
            "max_steps": 3,
            "logging_steps": 1,
            "seed": 0,
        },
        "evaluation": {"num_prompts": 4, "samples_per_prompt": 2, "max_new_tokens": 12},
        "output_dir": str(output_dir),
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


@pytest.mark.integration
def test_short_run_changes_weights_logs_and_writes_eval(tiny_model_dir, tmp_path):
    from alignment.run import run_recipe

    out = tmp_path / "run"
    assert run_recipe(recipe_from_dict(online_recipe(tiny_model_dir, out))) == 0
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    result = json.loads((out / "eval.json").read_text())
    assert result["reward"] == "gold" and 0 <= result["win_rate"] <= 1 and result["kl"] > 0
    stats = json.loads((out / "online_stats.json").read_text())
    assert stats["steps"] == 3 and stats["pairs_total"] + stats["ties_total"] == 12
    assert stats["weight_syncs"] == 0  # transformers backend: the sampler is the live policy


def test_dry_run_loads_no_model(tiny_model_dir, tmp_path, capsys):
    from alignment.run import run_recipe

    assert run_recipe(recipe_from_dict(online_recipe(tiny_model_dir, tmp_path / "dry")), dry_run=True) == 0
    out = capsys.readouterr().out
    assert "optimizer_steps: 3" in out and "samples_per_step: 8" in out
    assert not (tmp_path / "dry").exists()


@pytest.mark.vllm
def test_vllm_engine_holds_the_trained_weights_after_each_step(vllm_sampler, tiny_model_dir, tmp_path):
    """Online run with `sampling.backend: vllm` (the session engine on the tiny model): after training, the
    engine's log π of fixed completions equals the saved policy's forward pass — and differs from the
    initial model's, so the sync callback (one push per optimizer step) really ran."""
    from transformers import AutoModelForCausalLM

    from alignment.run import run_recipe
    from alignment.sampling.base import prompt_token_ids

    out = tmp_path / "vllm"
    raw = online_recipe(
        tiny_model_dir,
        out,
        sampling={"backend": "vllm", "n": 4, "vllm": {"max_model_len": 256}},
        evaluation={"enabled": False},
    )
    assert run_recipe(recipe_from_dict(raw)) == 0
    assert json.loads((out / "online_stats.json").read_text())["weight_syncs"] == 3
    tokenizer = vllm_sampler.tokenizer
    prompts = ["the cat", "a red dog likes", "please answer"]
    prompt_ids = prompt_token_ids(tokenizer, prompts)
    completions = [
        tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for t in (" runs to the tree.", " a blue house.", " yes thanks.")
    ]
    engine = torch.tensor(vllm_sampler.sequence_logprobs(prompt_ids, completions), dtype=torch.float64)

    def policy_logps(model_dir):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        batch = build_packed_batch(
            prompt_ids, [[c] for c in completions], pad_token_id=tokenizer.pad_token_id, pack_length=64
        )
        with torch.no_grad():
            return sequence_logps(model, batch)[:, 0].double()

    torch.testing.assert_close(engine, policy_logps(out), rtol=0, atol=1e-3)
    assert (engine - policy_logps(tiny_model_dir)).abs().max() > 1e-2


def test_missing_reward_model_fails_before_the_policy_loads(tmp_path, monkeypatch, capsys):
    """A reward model that is neither local nor on a reachable hub: exit 2 naming the key and the fix."""
    import transformers

    from alignment.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: loaded.append(a) or real(*a, **k),
    )
    argv = [
        "recipes/online_dpo.yaml",
        f"reward.name_or_path={tmp_path / 'no-rm'}",
        f"output_dir={tmp_path / 'out'}",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reward.name_or_path" in err and "recipes/reward_model.yaml" in err
    assert loaded == []


@pytest.mark.integration
def test_dpo_on_policy_is_online_dpo(tiny_model_dir, tmp_path):
    """recipes/dpo.yaml with `data.source=on_policy` (and the online recipe's data, sampling and reward) takes
    the very steps recipes/online_dpo.yaml takes: the same losses and metrics at every step, bit for bit."""
    from alignment.recipe.load import load_recipe
    from alignment.run import run_recipe

    repo = Path(__file__).resolve().parents[2]
    shared = [
        f"model.name_or_path={tiny_model_dir}",
        "data.train={name: toy-prompts, args: {n: 16}}",
        "reward={kind: gold}",
        "training.max_steps=3",
        "training.logging_steps=1",
        "training.per_device_train_batch_size=4",
        "sampling.max_new_tokens=12",
        "evaluation.enabled=false",
    ]
    online = load_recipe(repo / "recipes" / "online_dpo.yaml", [*shared, f"output_dir={tmp_path / 'online'}"])
    sampling = [f"sampling.{k}={v}" for k, v in vars(online.sampling).items() if k != "vllm"]
    dpo = load_recipe(
        repo / "recipes" / "dpo.yaml",
        [*shared, *sampling, "data.source=on_policy", f"output_dir={tmp_path / 'dpo'}"],
    )
    assert dpo.method.name == "dpo" and dpo.data.source == online.data.source == "on_policy"
    assert dpo.sampling == online.sampling and dpo.method.params == online.method.params
    for recipe in (online, dpo):
        assert run_recipe(recipe) == 0

    def logged(out):
        """Every step's logged numbers but the wall-clock ones."""
        history = json.loads((out / "trainer_state.json").read_text())["log_history"]
        return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history if "loss" in h]

    got, want = logged(tmp_path / "dpo"), logged(tmp_path / "online")
    assert [h["step"] for h in want] == [1, 2, 3] and len({h["loss"] for h in want}) > 1
    assert got == want
