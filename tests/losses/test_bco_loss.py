"""BCO loss, reward shift δ and UDM density-ratio weights (float64, atol 1e-9)."""

import json
import math

import numpy as np
import pytest
import torch
from loss_testing import ATOL, F64, close, t  # noqa: E402,F401

from alignment.losses import (
    RewardShift,
    bco_loss,
    density_ratio_weights,
    fit_density_ratio_classifier,
)


def test_bco_by_hand():
    """β = 0.5, δ = 0.5. Desirable ρ = 3 → r = 1.5, −log σ(1.5 − 0.5) = log(1 + e^{−1}) = 0.313261687518.
    Undesirable ρ = 3 → −log σ(−1) = log(1 + e) = 1.313261687518; with w = 2 → 2.626523375036.
    Undesirable ρ = 1 → r = 0.5 = δ → log 2 = 0.693147180560 (w = 0.5 → 0.346573590280)."""
    policy, ref = t(3.0, 3.0, 1.0), t(0.0, 0.0, 0.0)
    labels = torch.tensor([True, False, False])
    out = bco_loss(policy, ref, labels, 0.5, beta=0.5)
    close(out.losses, t(0.313261687518, 1.313261687518, 0.693147180560))
    close(out.rewards, t(1.5, 1.5, 0.5))
    weighted = bco_loss(policy, ref, labels, 0.5, beta=0.5, udm_weights=t(7.0, 2.0, 0.5))  # 7.0 ignored (desirable)
    close(weighted.losses, t(0.313261687518, 2.626523375036, 0.346573590280))


def test_udm_all_ones_reduces_to_unweighted():
    g = torch.Generator().manual_seed(0)
    policy, ref = torch.randn(8, dtype=F64, generator=g), torch.randn(8, dtype=F64, generator=g)
    labels = torch.arange(8) % 3 == 0
    plain = bco_loss(policy, ref, labels, 0.2, beta=0.1).losses
    assert torch.equal(bco_loss(policy, ref, labels, 0.2, beta=0.1, udm_weights=torch.ones(8, dtype=F64)).losses, plain)


def test_delta_is_a_constant():
    """δ = 0.1·mean(ρ) = 0 here, built with a graph on purpose; bco_loss must treat it as a constant.
    Both desirable: d/dρ[−log σ(ρ − δ)] = −σ(−ρ) → (−σ(−1), −σ(1)). A live δ would add
    0.05·(σ(−1) + σ(1)) = 0.05 to each entry."""
    policy = t(1.0, -1.0).requires_grad_()
    delta = (policy * 0.1).mean()
    bco_loss(policy, t(0.0, 0.0), torch.tensor([True, True]), delta, beta=1.0).losses.sum().backward()
    close(policy.grad, -torch.sigmoid(t(-1.0, 1.0)))


def test_density_ratio_weights_clamped():
    """p = 0.5 → 1; p = 0.9 → 9; p = 0.99 → 99 → clamped 10; p = 0.1 → 0.111 → clamped 0.5; p = 0.8 → 4."""
    w = density_ratio_weights(t(0.5, 0.9, 0.99, 0.1, 0.8))
    close(w, t(0.5 / (0.5 + 1e-8), 0.9 / (0.1 + 1e-8), 10.0, 0.5, 0.8 / (0.2 + 1e-8)))
    assert float(w.min()) >= 0.5 and float(w.max()) <= 10.0


def test_reward_shift_class_imbalance():
    """90 desirable rewards of 1.0 and 10 undesirable of −1.0: class-balanced δ = ½(1 + (−1)) = 0.0; pooled
    δ = (90·1 − 10·1)/100 = 0.8 (the reference code's mean, drifting to the majority class)."""
    rewards = torch.cat([torch.ones(90, dtype=F64), -torch.ones(10, dtype=F64)])
    labels = torch.arange(100) < 90
    balanced, pooled = RewardShift(), RewardShift(mode="pooled")
    assert balanced.update(rewards, labels) == pytest.approx(0.0, abs=ATOL)
    assert pooled.update(rewards, labels) == pytest.approx(0.8, abs=ATOL)


def test_reward_shift_missing_class_and_empty():
    shift = RewardShift()
    assert shift.delta == 0.0
    assert shift.update(t(2.0, 4.0), torch.tensor([True, True])) == pytest.approx(3.0, abs=ATOL)
    assert shift.update(t(-1.0), torch.tensor([False])) == pytest.approx(1.0, abs=ATOL)  # ½(3 + (−1))


def test_reward_shift_cumulative_vs_ema():
    """Desirable batches with means 1 (2 examples) then 4 (1 example); undesirable always 0.
    Cumulative (count-weighted): mean₊ = (1 + 1 + 4)/3 = 2 → δ = 1.0.
    EMA decay 0.5: mean₊ = 1 after step 1 (initialised), 0.5·1 + 0.5·4 = 2.5 → δ = 1.25."""
    cum, ema = RewardShift(), RewardShift(decay=0.5)
    for shift in (cum, ema):
        shift.update(t(1.0, 1.0, 0.0), torch.tensor([True, True, False]))
        shift.update(t(4.0, 0.0), torch.tensor([True, False]))
    assert cum.delta == pytest.approx(1.0, abs=ATOL)
    assert ema.delta == pytest.approx(1.25, abs=ATOL)


def test_pooled_matches_reference_running_mean():
    """Reference: mean 0, count 1e-24, every per-example reward pushed, count-weighted. After batches
    (1, 2, 3) and (10,): mean = 16/4 = 4; the 1e-24 prior is invisible at float64."""
    shift = RewardShift(mode="pooled")
    shift.update(t(1.0, 2.0, 3.0), torch.tensor([True, False, True]))
    assert shift.delta == pytest.approx(2.0, abs=ATOL)
    shift.update(t(10.0), torch.tensor([False]))
    assert shift.delta == pytest.approx(4.0, abs=ATOL)


def test_reward_shift_state_dict_round_trip():
    shift = RewardShift(decay=0.9)
    shift.update(t(1.0, -2.0, 0.5), torch.tensor([True, False, True]))
    state = json.loads(json.dumps(shift.state_dict()))
    restored = RewardShift(decay=0.9)
    restored.load_state_dict(state)
    assert restored.delta == shift.delta
    batch = (t(3.0, 1.0), torch.tensor([True, False]))
    assert restored.update(*batch) == shift.update(*batch)
    with pytest.raises(ValueError):
        RewardShift(mode="pooled").load_state_dict(state)


def test_update_from_sums_equals_update():
    a, b = RewardShift(), RewardShift()
    a.update(t(1.0, 2.0, -3.0), torch.tensor([True, True, False]))
    b.update_from_sums(3.0, 2, -3.0, 1)
    assert a.state_dict() == b.state_dict()


def _gaussian_prompts(rng: np.random.Generator, n_pos: int, n_neg: int):
    """p₊ = N(μ₊, I), p₋ = N(μ₋, I) in 4-d: log p₊(x)/p₋(x) = (μ₊ − μ₋)·x − ½(|μ₊|² − |μ₋|²)."""
    mu_pos, mu_neg = np.array([0.6, 0.0, -0.3, 0.2]), np.array([-0.4, 0.3, 0.2, 0.0])
    pos = rng.normal(size=(n_pos, 4)) + mu_pos
    neg = rng.normal(size=(n_neg, 4)) + mu_neg

    def true_log_ratio(x: np.ndarray) -> np.ndarray:
        return x @ (mu_pos - mu_neg) - 0.5 * (mu_pos @ mu_pos - mu_neg @ mu_neg)

    return pos, neg, true_log_ratio


def test_density_ratio_classifier_recovers_true_ratio_without_class_prior():
    """4:1 imbalance (4000 desirable, 1000 undesirable prompts). The balanced classifier's log-odds track the
    true log density ratio (correlation > 0.9, mean offset < 0.15), i.e. the log 4 = 1.386 class prior is gone;
    an unbalanced fit on the same data is offset by about log 4."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    pos, neg, true_log_ratio = _gaussian_prompts(rng, 4000, 1000)
    clf = fit_density_ratio_classifier(torch.from_numpy(pos), neg, seed=0)
    test_x = rng.normal(size=(2000, 4)) * 1.0
    p = clf.prob_desirable(test_x)
    assert p.shape == (2000,) and p.dtype == F64
    est = torch.log(p / (1 - p)).numpy()
    truth = true_log_ratio(test_x)
    assert np.corrcoef(est, truth)[0, 1] > 0.9
    assert abs(np.mean(est - truth)) < 0.15
    prior = LogisticRegression(max_iter=1000).fit(np.concatenate([pos, neg]), np.r_[np.ones(4000), np.zeros(1000)])
    prior_est = prior.decision_function(test_x)
    assert abs(np.mean(prior_est - truth) - math.log(4)) < 0.2
    w = clf.weights(test_x)
    assert float(w.min()) >= 0.5 and float(w.max()) <= 10.0


def test_gradcheck_bco():
    g = torch.Generator().manual_seed(5)
    policy = torch.randn(6, dtype=F64, generator=g).requires_grad_()
    ref = torch.randn(6, dtype=F64, generator=g)
    labels = torch.tensor([True, False, True, False, False, True])
    w = torch.rand(6, dtype=F64, generator=g) + 0.5
    assert torch.autograd.gradcheck(lambda p: bco_loss(p, ref, labels, 0.3, beta=0.7, udm_weights=w).losses, (policy,))
