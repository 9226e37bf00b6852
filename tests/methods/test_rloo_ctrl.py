"""RLOO and CTRL: the loss against a hand-written loop, the normalised transforms, the analytic tool against
closed forms and a Monte-Carlo draw, the reference-rollout cache, and the recipe mistakes named early."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alignment.errors import RecipeError
from alignment.experience.labellers import CalibratedRewardLabeller, RolloutCache
from alignment.experience.samples import SCORES
from alignment.losses.ctrl import beta_for_kl, normalized_transform, pick_t, tilted_curve
from alignment.methods.ctrl import CTRLObjective, CTRLParams
from alignment.methods.objective import StepContext
from alignment.methods.rloo import RLOOObjective, RLOOParams, leave_one_out_advantages
from alignment.recipe.load import recipe_from_dict
from alignment.sampling.base import Completions, SamplingParams

F64 = torch.float64


def test_rloo_loss_is_reinforce_with_a_leave_one_out_baseline_on_the_penalised_reward():
    beta = 0.3
    scores = torch.tensor([[1.0, 2.0, 4.0], [0.5, 0.5, -1.0]], dtype=F64)
    policy = torch.tensor([[-3.0, -2.0, -5.0], [-1.0, -4.0, -2.5]], dtype=F64, requires_grad=True)
    ref = torch.tensor([[-3.5, -2.0, -4.0], [-1.5, -3.0, -2.5]], dtype=F64)
    out = RLOOObjective(RLOOParams(beta=beta)).loss(
        policy, ref, StepContext(batch={SCORES: scores}, training=True)
    )
    want, grads = 0.0, []
    for b in range(2):
        penalised = [scores[b, j].item() - beta * (policy[b, j].item() - ref[b, j].item()) for j in range(3)]
        for j in range(3):
            advantage = penalised[j] - sum(penalised[i] for i in range(3) if i != j) / 2
            want -= advantage * policy[b, j].item() / 6
            grads.append(-advantage / 6)
    assert out.loss.item() == pytest.approx(want, abs=1e-12)
    out.loss.backward()
    assert policy.grad.flatten().tolist() == pytest.approx(
        grads, abs=1e-12
    )  # the log-ratio is not differentiated
    assert out.metrics["rloo/kl_penalty"].item() == pytest.approx(
        beta * (policy - ref).mean().item(), abs=1e-6
    )


def test_leave_one_out_advantages_sum_to_zero_and_need_two_samples():
    a = leave_one_out_advantages(torch.tensor([[1.0, 5.0, 3.0, 7.0]], dtype=F64))
    assert a[0].tolist() == pytest.approx([1 - 5, 5 - 11 / 3, 3 - 13 / 3, 7 - 3])
    assert a.sum().item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="k >= 2"):
        leave_one_out_advantages(torch.ones(3, 1))


@pytest.mark.parametrize("kind", ["identity", "bon", "won"])
def test_normalised_transforms_map_the_unit_interval_onto_itself_increasingly(kind):
    u = torch.linspace(0, 1, 101, dtype=F64)
    phi = normalized_transform(u, kind, 5.0)
    assert phi[0].item() == pytest.approx(0.0) and phi[-1].item() == pytest.approx(1.0)
    assert (phi.diff() > 0).all()
    mid = normalized_transform(torch.tensor([0.5], dtype=F64), kind, 5.0).item()
    assert {"identity": mid == pytest.approx(0.5), "bon": mid < 0.5, "won": mid > 0.5}[kind]  # tail emphasis
    raw = {"bon": torch.exp(5 * u), "won": -torch.exp(-5 * u)}.get(kind)
    if raw is not None:  # an increasing affine map of the paper's Φ
        torch.testing.assert_close((raw - raw[0]) / (raw[-1] - raw[0]), phi)


def test_ctrl_rewards_are_the_transformed_calibrated_scores_and_t_comes_from_the_tool():
    objective = CTRLObjective(CTRLParams(transform="won", t=None, target_n=4, target_kl=1.0))
    assert objective.t == pytest.approx(pick_t("won", 4, 1.0)[0])
    scores = torch.tensor([[0.0, 0.25, 1.0]], dtype=F64)
    rewards, metrics = objective.rewards(scores, StepContext(batch={}, training=True))
    torch.testing.assert_close(rewards, normalized_transform(scores, "won", objective.t))
    assert metrics["ctrl/calibrated_mean"].item() == pytest.approx(1.25 / 3)


def test_analytic_tool_matches_the_identity_closed_form():
    beta = 0.25
    a = 1 / beta
    point = tilted_curve("identity", 1.0, beta, 1)
    mean = 1 / (1 - math.exp(-a)) - 1 / a  # E[u] under q ∝ exp(a·u) on [0, 1]
    assert point["win_rate"] == pytest.approx(mean, abs=1e-6)
    assert point["best_of_1_win_rate"] == pytest.approx(mean, abs=1e-6)
    assert point["kl"] == pytest.approx(a * mean - math.log(math.expm1(a) / a), abs=1e-6)
    flat = tilted_curve("bon", 3.0, 1e3, 4)  # a huge β keeps π_ref: every win rate is a coin flip
    assert flat["kl"] == pytest.approx(0.0, abs=1e-5) and flat["best_of_4_win_rate"] == pytest.approx(
        0.5, abs=1e-3
    )
    assert beta_for_kl("identity", 1.0, point["kl"]) == pytest.approx(beta, rel=1e-4)


@pytest.mark.parametrize("kind", ["bon", "won"])
def test_analytic_best_and_worst_of_n_match_a_monte_carlo_draw(kind):
    t, beta, n = 6.0, 0.3, 4
    point = tilted_curve(kind, t, beta, n)
    rng = np.random.default_rng(0)
    u = np.linspace(0, 1, 200001)
    density = np.exp(normalized_transform(torch.from_numpy(u), kind, t).numpy() / beta)
    cdf = np.cumsum(density) / density.sum()
    draws = np.interp(rng.random((200000, n)), cdf, u)  # n samples of π* per trial, as calibrated scores
    uniform = rng.random((200000, n))  # n samples of π_ref
    pick = np.max if kind == "bon" else np.min
    want = float((pick(draws, axis=1) > pick(uniform, axis=1)).mean())
    key = f"{'best' if kind == 'bon' else 'worst'}_of_{n}_win_rate"
    assert point[key] == pytest.approx(want, abs=0.005)


def test_the_chosen_t_beats_the_identity_transform_at_the_same_kl():
    kl, n = 1.0, 4
    identity = tilted_curve("identity", 1.0, beta_for_kl("identity", 1.0, kl), n)
    _, bon = pick_t("bon", n, kl)
    _, won = pick_t("won", n, kl)
    assert bon["best_of_4_win_rate"] > identity["best_of_4_win_rate"] + 0.03
    assert won["worst_of_4_win_rate"] > identity["worst_of_4_win_rate"] + 0.01
    assert identity["win_rate"] > max(bon["win_rate"], won["win_rate"])  # identity is optimal for N = 1


class CountingSampler:
    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        texts = [[f"{p} sample {j}" for j in range(params.n)] for p in prompts]
        return Completions(
            prompts=list(prompts), texts=texts, token_ids=[[[1]] * params.n for _ in prompts], logprobs=None
        )


class LengthReward:
    def score(self, prompts, texts):
        return torch.tensor([float(len(t)) for t in texts], dtype=F64)


def test_reference_rollouts_are_cached_and_reused(tmp_path):
    params = SamplingParams(n=3, seed=1)
    prompts = ["a", "bb", "a"]

    def labeller(weights: str):
        cache = RolloutCache(tmp_path, weights=weights, reward="length", params=params)
        return CalibratedRewardLabeller(LengthReward(), CountingSampler(), params, cache=cache)

    first = labeller("w1")
    first.prepare(prompts)
    assert first.reference_sampler.calls == 1 and first.stats["cache_hit"] is False
    second = labeller("w1")
    second.prepare(prompts)
    assert second.reference_sampler.calls == 0 and second.stats["cache_hit"] is True
    assert all(torch.equal(first.reference_rewards[p], second.reference_rewards[p]) for p in ("a", "bb"))
    other = labeller("w2")  # other reference weights: sampled again
    other.prepare(prompts)
    assert other.reference_sampler.calls == 1


@pytest.mark.parametrize(
    "method, extra, path, message",
    [
        ({"name": "ctrl", "t": 0}, {}, "method.t", "must be > 0"),
        ({"name": "ctrl", "t": -1.5}, {}, "method.t", "must be > 0"),
        ({"name": "ctrl", "reference_samples": 1}, {}, "method.reference_samples", "must be >= 2"),
        ({"name": "ctrl", "transform": "best_of_n"}, {}, "method.transform", "identity"),
    ],
)
def test_ctrl_recipe_mistakes_are_named(method, extra, path, message):
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"method": method, "data": {"train": "toy-prompts"}, **extra})
    assert err.value.path == path and message in err.value.message
