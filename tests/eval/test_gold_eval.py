"""Gold evaluation: win-rate arithmetic by hand, and the base model evaluated against itself."""

from __future__ import annotations

import json

import pytest
import torch

from alignment.eval.gold import EvalSettings, best_of_n_win_rate, evaluate, pairwise_win_rate, write_eval
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
