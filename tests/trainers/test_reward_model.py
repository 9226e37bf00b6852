"""Reward-model method: the Bradley–Terry loss against hand maths, the trainer step against the scorer, and a
short end-to-end run on toy-paired-style data (corpus-written completions) with the session's tiny Llama."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from alignment.losses.reward import bradley_terry_loss
from alignment.recipe.load import recipe_from_dict

# --------------------------------------------------------------------------------------------- the loss


def test_bradley_terry_loss_matches_hand_maths():
    """Δ = r_w − r_l = (0, 1, 2, −1): −log σ(Δ) = (log 2, 0.313262, 0.126928, 1.313262)."""
    chosen = torch.tensor([0.5, 1.0, 3.0, -2.0], dtype=torch.float64)
    rejected = torch.tensor([0.5, 0.0, 1.0, -1.0], dtype=torch.float64)
    want = torch.tensor(
        [math.log(2), 0.31326168751822286, 0.12692801104297263, 1.3132616875182228], dtype=torch.float64
    )
    torch.testing.assert_close(bradley_terry_loss(chosen, rejected), want, rtol=0, atol=1e-12)


def test_centering_term_adds_c_times_squared_sum():
    """c = 0.1, r_w + r_l = (1, 2, 4, −3): the term is 0.1·(1, 4, 16, 9); its mean is TRL's penalty."""
    chosen = torch.tensor([0.5, 1.0, 3.0, -2.0], dtype=torch.float64)
    rejected = torch.tensor([0.5, 1.0, 1.0, -1.0], dtype=torch.float64)
    plain = bradley_terry_loss(chosen, rejected)
    centered = bradley_terry_loss(chosen, rejected, center_rewards_coefficient=0.1)
    torch.testing.assert_close(
        centered - plain, torch.tensor([0.1, 0.4, 1.6, 0.9], dtype=torch.float64), rtol=0, atol=1e-12
    )
    trl_penalty = 0.1 * torch.mean((chosen + rejected) ** 2)
    torch.testing.assert_close(centered.mean(), plain.mean() + trl_penalty, rtol=0, atol=1e-12)


def test_bradley_terry_gradient():
    chosen = torch.randn(5, dtype=torch.float64, requires_grad=True)
    rejected = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda c, r: bradley_terry_loss(c, r, center_rewards_coefficient=0.05), (chosen, rejected)
    )


# --------------------------------------------------------------------------------------------- the step


def test_group_comparisons_merges_consecutive_same_prompt_pairs_up_to_the_size_cap():
    """Rows 0-2: one prompt, completions a,b,c in 3 pairs -> one group of 3 sequences; row 3 repeats the prompt
    with a new completion d but the cap (3) is full -> a new group; row 4 is another prompt; row 5 returns to
    the first prompt but is not consecutive with it -> its own group; row 6 has chosen == rejected."""
    from datasets import Dataset

    from alignment.trainers.reward_model import group_comparisons

    a, b, c, d, e = [1, 2], [1, 3], [1, 4, 5], [1, 6], [7]
    rows = [("p", a, b), ("p", a, c), ("p", c, b), ("p", d, a), ("q", e, a), ("p", a, b), ("q", e, e)]
    pairs = Dataset.from_dict(
        {
            "prompt": [r[0] for r in rows],
            "chosen_input_ids": [r[1] for r in rows],
            "rejected_input_ids": [r[2] for r in rows],
        }
    )
    groups = group_comparisons(pairs, max_group_size=3)
    assert groups["input_ids"] == [[a, b, c], [d, a], [e, a], [a, b], [e]]
    assert groups["pairs"] == [[[0, 1], [0, 2], [2, 1]], [[0, 1]], [[0, 1]], [[0, 1]], [[0, 0]]]
    assert group_comparisons(pairs, max_group_size=2)["pairs"][:3] == [[[0, 1]], [[0, 1]], [[0, 1]]]


def test_trainer_loss_on_hand_made_groups_equals_per_group_mean_of_minus_log_sigmoid(
    tiny_model_dir, tiny_tokenizer, tmp_path
):
    """RewardModelTrainer.compute_loss on two collated groups (3 completions with 3 pairs, and one pair) =
    mean over groups of the mean −log σ(r_w − r_l) of their pairs, the rewards being the logits
    RewardModelScorer gives the same texts (so training and scoring tokenize alike)."""
    from transformers import TrainingArguments

    from alignment.models import load_reward_model
    from alignment.rewards.model import RewardModelScorer
    from alignment.trainers.reward_model import ComparisonCollator, RewardModelTrainer

    torch.manual_seed(0)
    model = load_reward_model(str(tiny_model_dir)).eval()
    model.config.pad_token_id = tiny_tokenizer.pad_token_id
    eos = tiny_tokenizer.eos_token
    texts = {
        "the cat": [" likes a tree.", " bad.", " sat on the mat today."],
        "a big dog runs to": [" the river.", " no no no no thanks."],
    }
    groups = [
        {"input_ids": [tiny_tokenizer(p + t + eos)["input_ids"] for t in ts], "pairs": pairs}
        for (p, ts), pairs in zip(texts.items(), ([[0, 1], [2, 1], [0, 2]], [[0, 1]]))
    ]
    batch = ComparisonCollator(tiny_tokenizer.pad_token_id)(groups)
    assert batch["input_ids"].shape[0] == 5  # every group's sequences in turn
    assert batch["input_ids"][3, : len(groups[1]["input_ids"][0])].tolist() == groups[1]["input_ids"][0]
    assert batch["pair_index"].tolist() == [[0, 1], [2, 1], [0, 2], [3, 4]]
    assert batch["pair_group"].tolist() == [0, 0, 0, 1]
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = RewardModelTrainer(model=model, args=args, data_collator=ComparisonCollator(0))
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)

    scorer = RewardModelScorer(model, tiny_tokenizer)
    r = {p: scorer.score([p] * len(ts), ts) for p, ts in texts.items()}
    first = -torch.log(torch.sigmoid(r["the cat"][[0, 2, 0]] - r["the cat"][[1, 1, 2]])).mean()
    second = -torch.log(torch.sigmoid(r["a big dog runs to"][0] - r["a big dog runs to"][1]))
    torch.testing.assert_close(loss.double(), (first + second) / 2, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------- a run


def corpus_paired(*, split: str = "train", seed: int = 0, n: int = 48, temperature: float = 1.0):
    """toy-paired without a model: corpus-written completions (every response kind), labelled by the
    builder's own Bradley–Terry draw on gold. The session's tiny Llama cannot answer toy prompts."""
    import random

    from datasets import Dataset

    from alignment.toy.builders import _pairs
    from alignment.toy.corpus import sample_completion, sample_prompts

    prompts = sample_prompts(n, seed=seed, split=split)
    rng = random.Random(seed)
    samples = [[sample_completion(p, rng=rng) for _ in range(2)] for p in prompts]
    return Dataset.from_dict(_pairs(prompts, samples, temperature, seed + 1))


@pytest.fixture
def toy_paired(monkeypatch):
    """`toy-paired` served by `corpus_paired`, registered as a dataset builder for the test."""
    from alignment.data.loading import DATASET_BUILDERS
    from alignment.toy import builders

    monkeypatch.setitem(builders.TOY_BUILDERS, "toy-paired", corpus_paired)
    monkeypatch.setitem(DATASET_BUILDERS._entries, "toy-paired", corpus_paired)


def tiny_recipe(model_dir, output_dir, **data):
    return recipe_from_dict(
        {
            "method": {"name": "reward_model"},
            "model": {"name_or_path": str(model_dir)},
            "data": {"train": {"name": "toy-paired", "args": {"n": 48, "temperature": 0.5}}, **data},
            "training": {
                "max_steps": 3,
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-3,
                "logging_steps": 1,
                "use_cpu": True,
            },
            "output_dir": str(output_dir),
        }
    )


def test_run_writes_a_model_the_scorer_loads(tiny_model_dir, tmp_path, toy_paired, capsys):
    from alignment.rewards.model import RewardModelScorer
    from alignment.run import run_recipe

    out = tmp_path / "rm"
    assert run_recipe(tiny_recipe(tiny_model_dir, out)) == 0
    assert (out / "recipe.yaml").exists() and (out / "model.safetensors").exists()
    state = json.loads((out / "trainer_state.json").read_text())  # the final state, as policy runs write
    assert state["global_step"] == 3 and any("loss" in h for h in state["log_history"])
    result = json.loads((out / "eval.json").read_text())
    for key in ("heldout_accuracy", "num_heldout", "ceiling", "gold_accuracy", "label_temperature"):
        assert key in result
    assert result["accuracy_by_term"] and all(
        0 <= v["accuracy"] <= 1 for v in result["accuracy_by_term"].values()
    )
    assert result["num_heldout"] == 5  # the pairs of 10% of the 48 distinct prompts, rounded up
    assert 0.0 <= result["heldout_accuracy"] <= 1.0
    assert 0.5 <= result["ceiling"] <= 1.0 and 0.0 <= result["gold_accuracy"] <= 1.0
    assert result["label_temperature"] == 0.5 and result["steps"] == 3
    scores = RewardModelScorer.from_pretrained(str(out)).score(["the cat"], [" likes a tree."])
    assert scores.shape == (1,) and torch.isfinite(scores).all()
    assert "held-out accuracy" in capsys.readouterr().out


def test_resume_from_checkpoint_ends_where_an_uninterrupted_run_does(tiny_model_dir, tmp_path, toy_paired):
    """4 steps in one go, against 2 steps (checkpoint-2) then `resume_from_checkpoint=last` to step 4: the
    same weights (constant learning rate, so the schedule does not depend on max_steps). A copy of
    checkpoint-2 with a tampered score head, resumed the same way, ends elsewhere: the checkpoint is read."""
    import shutil

    from safetensors.torch import load_file, save_file

    from alignment.run import run_recipe

    def run(out, *overrides):
        recipe = tiny_recipe(tiny_model_dir, out)
        training = {**recipe.training, "lr_scheduler_type": "constant", "save_steps": 2, **dict(overrides)}
        return run_recipe(dataclasses.replace(recipe, training=training))

    def weights(out):
        return load_file(out / "model.safetensors")

    run(tmp_path / "whole", ("max_steps", 4))
    run(tmp_path / "parts", ("max_steps", 2))
    shutil.copytree(tmp_path / "parts" / "checkpoint-2", tmp_path / "tampered" / "checkpoint-2")
    tampered = tmp_path / "tampered" / "checkpoint-2" / "model.safetensors"
    state = load_file(tampered)
    save_file({**state, "score.weight": state["score.weight"] * 3}, tampered, metadata={"format": "pt"})
    for out in ("parts", "tampered"):
        run(tmp_path / out, ("max_steps", 4), ("resume_from_checkpoint", "last"))
    whole, parts = weights(tmp_path / "whole"), weights(tmp_path / "parts")
    for name in whole:
        torch.testing.assert_close(parts[name], whole[name], rtol=0, atol=1e-6)
    assert not torch.allclose(
        weights(tmp_path / "tampered")["score.weight"], whole["score.weight"], atol=1e-3
    )


def test_heldout_split_is_by_prompt_and_keeps_the_training_order(tiny_model_dir, tmp_path, toy_paired):
    """Without data.eval: no held-out prompt has a training pair, and training rows stay in data order (the
    comparison groups are built from consecutive rows)."""
    from alignment.models import load_tokenizer
    from alignment.trainers.reward_model import load_pairs, split_heldout

    recipe = tiny_recipe(tiny_model_dir, tmp_path / "rm")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train, heldout, _ = split_heldout(recipe, tokenizer)
    assert len(heldout) > 0 and not set(train["prompt"]) & set(heldout["prompt"])
    everything = load_pairs(recipe, tokenizer)
    assert len(train) + len(heldout) == len(everything)
    held = set(heldout["prompt"])
    assert train["chosen"] == [row["chosen"] for row in everything if row["prompt"] not in held]


def test_dry_run_stops_before_the_model(tiny_model_dir, tmp_path, toy_paired, capsys):
    from alignment.run import run_recipe

    out = tmp_path / "rm"
    eval_spec = {"eval": {"name": "toy-paired", "split": "eval", "args": {"n": 16}}}
    assert run_recipe(tiny_recipe(tiny_model_dir, out, **eval_spec), dry_run=True) == 0
    text = capsys.readouterr().out
    assert "48 training pairs, 16 held-out pairs" in text and "dry run" in text
    assert "48 pairs in 48 comparison groups" in text  # corpus_paired: one pair per prompt draw
    assert not out.exists()


def test_accuracy_by_gold_term_counts_only_pairs_where_the_term_differs():
    """Pair 0 differs in on/off topic and the model agrees; pair 1 differs in sentence_end (and topic
    presence: neither has the lamp) and the model disagrees; pair 2 is a gold tie and is left out."""
    from alignment.trainers.reward_model import accuracy_by_gold_term

    prompts = ["Review of the lamp:"] * 3
    chosen = [" The lamp is nice.", " It is fine.", " It is fine."]
    rejected = [" The kettle is nice.", " It is fine", " It is fine."]
    got = accuracy_by_gold_term(
        prompts,
        chosen,
        rejected,
        agrees_with_gold=torch.tensor([True, False, True]),
        decided=torch.tensor([True, True, False]),
    )
    assert got == {
        "on_topic": {"accuracy": 1.0, "pairs": 1},
        "off_topic": {"accuracy": 1.0, "pairs": 1},
        "sentence_end": {"accuracy": 0.0, "pairs": 1},
    }


def test_label_ceiling():
    """T = 0: a tie is a coin (1/2), anything else certain; T = 1, Δ = ±1: σ(1) = 0.731059 either way."""
    from alignment.trainers.reward_model import label_ceiling

    assert label_ceiling(torch.tensor([0.0, 2.0, -1.0, 0.5], dtype=torch.float64), 0.0) == pytest.approx(
        0.875
    )
    got = label_ceiling(torch.tensor([1.0, -1.0], dtype=torch.float64), 1.0)
    assert got == pytest.approx(1 / (1 + math.exp(-1)), abs=1e-12)


def test_heldout_accuracy_counts_ties_as_half_like_the_ceiling(tmp_path, monkeypatch):
    """Scores (chosen, rejected) = (2, 1), (1, 1), (0.5, 0.5), (3, 4): right, tie, tie, wrong, so the accuracy
    is (1 + ½ + ½ + 0)/4 = 0.5, as `label_ceiling` counts a gold tie ½ (counted 0 it would read 0.25)."""
    from types import SimpleNamespace

    from alignment.rewards.model import RewardModelScorer
    from alignment.trainers.reward_model import write_evaluation

    scores = {"w0": 2.0, "l0": 1.0, "w1": 1.0, "l1": 1.0, "w2": 0.5, "l2": 0.5, "w3": 3.0, "l3": 4.0}
    scorer = SimpleNamespace(
        score=lambda prompts, completions: torch.tensor([scores[c] for c in completions])
    )
    monkeypatch.setattr(RewardModelScorer, "from_pretrained", classmethod(lambda cls, path: scorer))
    heldout = {"prompt": ["p"] * 4, "chosen": ["w0", "w1", "w2", "w3"], "rejected": ["l0", "l1", "l2", "l3"]}
    result = write_evaluation(
        SimpleNamespace(output_dir=str(tmp_path)), heldout, SimpleNamespace(name="pairs.jsonl", args={}), {}
    )
    assert result["heldout_accuracy"] == 0.5
    assert json.loads((tmp_path / "eval.json").read_text())["heldout_accuracy"] == 0.5
