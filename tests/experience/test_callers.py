"""The callers that used to pick for themselves give what their own code gave before they moved onto the
selectors: the eval best-of-n / worst-of-n win rates, `best_of_n`, and toy-negatives' first harmful sample
(the toy datasets are cached by content hash and the README's numbers come from them, so byte-identical)."""

from __future__ import annotations

import random

import pytest
import torch

from alignment.eval.gold import best_of_n_win_rate, pairwise_win_rate
from alignment.sampling import SamplingParams, best_of_n


def amax_win_rate(policy: torch.Tensor, reference: torch.Tensor, n: int, *, worst: bool) -> float:
    """The win rate as `best_of_n_win_rate` computed it before (amax / amin per disjoint n-group)."""
    groups = policy.shape[1] // n
    pick = torch.amin if worst else torch.amax
    pol = pick(policy[:, : groups * n].reshape(len(policy), groups, n), dim=2)
    ref = pick(reference[:, : groups * n].reshape(len(reference), groups, n), dim=2)
    return pairwise_win_rate(pol, ref)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("worst", [False, True])
def test_best_of_n_win_rate_is_unchanged(n, worst):
    generator = torch.Generator().manual_seed(n)
    policy = torch.randint(-3, 4, (50, 7), generator=generator).double()  # many ties
    reference = torch.randint(-3, 4, (50, 7), generator=generator).double()
    assert best_of_n_win_rate(policy, reference, n, worst=worst) == amax_win_rate(
        policy, reference, n, worst=worst
    )


class TableReward:
    def __init__(self, values):
        self.values = iter(values)

    def score(self, prompts, completions):
        return torch.tensor([next(self.values) for _ in completions], dtype=torch.float64)


class SameSampler:
    def generate(self, prompts, params):
        from alignment.sampling.base import Completions

        texts = [[f"{p}-{j}" for j in range(params.n)] for p in prompts]
        return Completions(list(prompts), texts, [[[j + 1] for j in range(params.n)] for _ in prompts], None)


@pytest.mark.parametrize("worst", [False, True])
def test_best_of_n_picks_the_first_of_tied_extremes(worst):
    rewards = [1.0, 5.0, 5.0, -2.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 3.0, 3.0]
    result = best_of_n(SameSampler(), TableReward(rewards), ["x", "y", "z"], 4, SamplingParams(), worst=worst)
    assert result.chosen.tolist() == ([3, 0, 0] if worst else [1, 0, 2])
    assert result.texts == (["x-3", "y-0", "z-0"] if worst else ["x-1", "y-0", "z-2"])
    assert result.rewards.tolist() == ([-2.0, 0.0, -1.0] if worst else [5.0, 0.0, 3.0])


def test_toy_negatives_rejected_is_the_first_harmful_sample(monkeypatch, tmp_path):
    """The builder's rows equal the loop it ran before, on the same base samples."""
    from alignment.toy import builders
    from alignment.toy.corpus import sample_completion, sample_prompts
    from alignment.toy.gold import is_harmful

    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    ds = builders.toy_negatives(n=48, samples_per_prompt=3, seed=5)
    prompts = sample_prompts(48, seed=5)
    samples = builders._sample("toy-base", prompts, 3, 5, builders.MAX_NEW_TOKENS)
    rng = random.Random("negatives-5")
    rejected = []
    for p, s in zip(prompts, samples):
        harmful = [t for t, h in zip(s, is_harmful(s).tolist()) if h]
        rejected.append(harmful[0] if harmful else sample_completion(p, rng=rng, kind="harmful"))
    assert ds["prompt"] == prompts and ds["rejected"] == rejected
    drawn = sum(r not in s for r, s in zip(rejected, samples))
    assert 0 < drawn < 48  # both branches ran: some prompts had a harmful sample, some did not
    assert sum(sum(is_harmful(s).tolist()) > 1 for s in samples) > 0  # ...and some more than one
