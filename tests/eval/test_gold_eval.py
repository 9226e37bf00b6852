"""Gold evaluation: win-rate arithmetic by hand, and the base model evaluated against itself."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.eval.gold import (
    EvalSettings,
    best_of_n_win_rate,
    evaluate,
    pairwise_accuracy,
    pairwise_win_rate,
    write_eval,
)
from alignment.eval.policy import make_policy
from alignment.models import load_causal_lm, load_tokenizer
from alignment.rewards.base import FunctionReward
from alignment.toy.corpus import all_prompts
from alignment.toy.gold import gold_reward, is_harmful


def test_pairwise_win_rate_counts_ties_half():
    """Prompt 1: policy (1, 3) vs reference (2, 2): pairs 1<2, 1<2, 3>2, 3>2 → 0.5.
    Prompt 2: (5, 5) vs (5, 4): 5=5 (½), 5>4, 5=5 (½), 5>4 → 0.75. Mean 0.625."""
    policy = torch.tensor([[1.0, 3.0], [5.0, 5.0]])
    reference = torch.tensor([[2.0, 2.0], [5.0, 4.0]])
    assert pairwise_win_rate(policy, reference) == pytest.approx(0.625, abs=1e-12)


def test_best_and_worst_of_n_pick_within_groups():
    """n=2 groups: policy best (3, 5) vs reference best (2, 5): 3>2, 3<5, 5>2, 5=5 → (1+0+1+½)/4 = 0.625;
    worst (1, 5) vs (2, 4): 1<2, 1<4, 5>2, 5>4 → (0+0+1+1)/4 = 0.5."""
    policy = torch.tensor([[1.0, 3.0, 5.0, 5.0]])
    reference = torch.tensor([[2.0, 2.0, 5.0, 4.0]])
    assert best_of_n_win_rate(policy, reference, 2, worst=False) == pytest.approx(0.625)
    assert best_of_n_win_rate(policy, reference, 2, worst=True) == pytest.approx(0.5)


@pytest.mark.integration
def test_base_model_against_itself_is_a_coin_flip_with_zero_kl(tmp_path):
    """Two independent sample sets of the same model: win rate 0.50 ± 0.03 and KL exactly 0."""
    model, tokenizer = load_causal_lm("toy-base"), load_tokenizer("toy-base")
    prompts = all_prompts("eval")
    settings = EvalSettings(num_prompts=len(prompts), samples_per_prompt=6, seed=7, best_of_n=(2,))
    policy = make_policy(model, tokenizer, batch_size=256)
    result = evaluate(
        policy, policy, prompts, FunctionReward(gold_reward, "gold"), settings, harmful_fn=is_harmful
    )
    assert result["num_samples"] == 6 * len(prompts) >= 6 * 140
    assert abs(result["win_rate"] - 0.5) <= 0.03
    assert abs(result["kl"]) <= 1e-6 and abs(result["kl_sampled"]) <= 1e-6
    assert abs(result["gold_reward"] - result["reference_gold_reward"]) < 0.3
    assert 0.0 < result["harmful_rate"] < 0.3
    path = write_eval(result, tmp_path)
    saved = json.loads(path.read_text())
    for key in (
        "gold_reward",
        "win_rate",
        "kl",
        "length",
        "num_prompts",
        "num_samples",
        "best_of_2_win_rate",
    ):
        assert key in saved
    assert (tmp_path / "eval_rewards.png").exists()


def test_eval_command_writes_eval_json(tmp_path, capsys):
    from alignment.cli import main

    argv = [
        "eval",
        "toy-base",
        "--num-prompts",
        "4",
        "--samples-per-prompt",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_samples"] == 8 and 0.0 <= result["win_rate"] <= 1.0
    assert abs(result["kl"]) < 1e-6  # toy-base against its own default reference
    assert "win_rate" in capsys.readouterr().out


def test_eval_command_stops_each_side_at_its_own_stop_strings(tmp_path):
    """--stop cuts the policy's samples and --reference-stop the reference's: neither text holds its marker,
    and a side without stop strings is not cut (toy answers are full of "e")."""
    from alignment.cli import main

    argv = ["eval", "toy-base", "--num-prompts", "6", "--output-dir", str(tmp_path)]
    assert main([*argv, "--reference-template", "Q: {prompt}", "--reference-stop", "e"]) == 0
    examples = json.loads((tmp_path / "eval.json").read_text())["examples"]
    assert all("e" not in ex["reference"] for ex in examples)
    assert any("e" in ex["policy"] for ex in examples)
    assert main([*argv, "--stop", "e"]) == 0
    examples = json.loads((tmp_path / "eval.json").read_text())["examples"]
    assert all("e" not in ex["policy"] for ex in examples) and any("e" in ex["reference"] for ex in examples)


def test_pairwise_accuracy_by_hand():
    """Prompt 1 (3 samples): judge 1 < 2 < 3; implicit 0.5, 0.1, 0.9: pairs (0,1) wrong, (0,2) right, (1,2)
    right. Prompt 2: judge ties (5, 5, 6): pair (0,1) left out; implicit ties on (0,2) count ½, (1,2) right."""
    judge = torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 6.0]])
    implicit = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.0, 0.2]])
    accuracy, pairs = pairwise_accuracy(implicit, judge)
    assert pairs == 5 and accuracy == pytest.approx((0 + 1 + 1 + 0.5 + 1) / 5)


@pytest.mark.integration
def test_pairwise_accuracy_is_the_implicit_reward_of_a_naive_loop(
    tiny_model_dir, tiny_tokenizer, prompts_for, completion_logps
):
    """π ≠ π_ref (a perturbed copy): evaluate's implicit reward of the reference's samples is
    log π(y|x) − log π_ref(y|x) from one unpadded forward per sample, and its accuracy follows from it."""
    from alignment.sampling.base import prompt_token_ids

    reference_model = load_causal_lm(str(tiny_model_dir))
    policy_model = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        for p in policy_model.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    judge = FunctionReward(lambda prompts, texts: [float(len(t)) for t in texts], "length")
    prompts = prompts_for(6, seed=2)
    settings = EvalSettings(num_prompts=6, samples_per_prompt=3, max_new_tokens=12, seed=3)
    result = evaluate(
        make_policy(policy_model, tiny_tokenizer),
        make_policy(reference_model, tiny_tokenizer),
        prompts,
        judge,
        settings,
    )
    samples = result["_samples"]["reference_completions"]
    prompt_ids = prompt_token_ids(tiny_tokenizer, samples.flat_prompts())
    naive = torch.tensor(completion_logps(policy_model, prompt_ids, samples.flat_token_ids())) - torch.tensor(
        completion_logps(reference_model, prompt_ids, samples.flat_token_ids())
    )
    implicit = result["_samples"]["reference_implicit"]
    torch.testing.assert_close(implicit.flatten(), naive.double(), atol=1e-4, rtol=0)
    assert implicit.abs().max() > 1e-2  # π ≠ π_ref
    want, pairs = pairwise_accuracy(naive.reshape(6, 3).double(), result["_samples"]["reference_reward"])
    assert result["pairwise_accuracy"] == pytest.approx(want) and result["pairwise_pairs"] == pairs > 0
    assert 0 <= result["pairwise_accuracy_policy_samples"] <= 1
