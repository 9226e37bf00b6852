"""KTO loss and its reference point z_0 (float64, atol 1e-9)."""

import pytest
import torch
from loss_testing import ATOL, F64, close, t  # noqa: E402,F401

from alignment.losses import kto_loss, kto_reference_point, kto_reference_point_from_sums, mismatched_indices


def test_mismatched_indices_cyclic_shift():
    """Spec: y'_j = y_{j+1}, last wraps to first. TRL 1.16 pairs x_1 with y_B and x_j with y_{j−1}: shift=−1."""
    assert mismatched_indices(4).tolist() == [1, 2, 3, 0]
    assert mismatched_indices(4, shift=-1).tolist() == [3, 0, 1, 2]
    idx = mismatched_indices(7)
    assert sorted(idx.tolist()) == list(range(7)) and bool((idx != torch.arange(7)).all())
    with pytest.raises(ValueError):
        mismatched_indices(1)


def test_reference_point_from_mismatched_pairs():
    """A table logp[i, j] = log π(y_j | x_i). With y'_j = y_{j+1}, the KL batch reads logp[0,1], logp[1,2],
    logp[2,0]. Policy (0.5, 1.5, 1.0) minus reference (0, 0, 1.0) = (0.5, 1.5, 0); mean 2/3."""
    policy = t(9.0, 0.5, 9.0, 9.0, 9.0, 1.5, 1.0, 9.0, 9.0).view(3, 3)
    ref = t(9.0, 0.0, 9.0, 9.0, 9.0, 0.0, 1.0, 9.0, 9.0).view(3, 3)
    idx = mismatched_indices(3)
    rows = torch.arange(3)
    z0 = kto_reference_point(policy[rows, idx], ref[rows, idx])
    close(z0, torch.tensor(2.0 / 3.0, dtype=F64))
    assert z0.dim() == 0


def test_reference_point_clamps_after_the_mean_and_is_detached():
    """ρ' = (−3, 1): mean −1 → clamped to 0 (clamp after averaging, not per example, which would give 0.5)."""
    policy = t(-3.0, 1.0).requires_grad_()
    z0 = kto_reference_point(policy, t(0.0, 0.0))
    close(z0, torch.tensor(0.0, dtype=F64))
    assert not z0.requires_grad
    # global mean from all-reduced sums: ranks with sums (3, −1) and counts (2, 2) → 2/4 = 0.5
    close(kto_reference_point_from_sums(t(3.0).sum() + t(-1.0).sum(), 4), torch.tensor(0.5, dtype=F64))
    close(kto_reference_point_from_sums(torch.tensor(5.0, dtype=F64), 0), torch.tensor(0.0, dtype=F64))


def test_no_gradient_reaches_the_kl_batch():
    policy_kl = t(0.3, 0.9, -0.1).requires_grad_()
    policy = t(1.0, -2.0, 0.5).requires_grad_()
    z0 = kto_reference_point(policy_kl, t(0.0, 0.0, 0.0))
    kto_loss(policy, t(0.0, 0.0, 0.0), torch.tensor([True, False, True]), z0, beta=0.1).losses.sum().backward()
    assert policy_kl.grad is None and policy.grad is not None
    # even a kl_estimate that still carries a graph is detached inside kto_loss
    leaky = (policy_kl.mean()).clamp(min=0)
    policy.grad = None
    kto_loss(policy, t(0.0, 0.0, 0.0), torch.tensor([True, False, True]), leaky, beta=0.1).losses.sum().backward()
    assert policy_kl.grad is None


def test_kto_by_hand_with_weights():
    """β = 0.5, z_0 = 1, λ_D = 2, λ_U = 3.
    desirable ρ = 3: 2·(1 − σ(0.5·(3 − 1))) = 2·(1 − σ(1)) = 2·0.268941421370 = 0.537882842740
    undesirable ρ = −1: 3·(1 − σ(0.5·(1 − (−1)))) = 3·(1 − σ(1)) = 0.806824264110
    desirable ρ = 1: 2·(1 − σ(0)) = 1.0;  undesirable ρ = 5: 3·(1 − σ(0.5·(1 − 5))) = 3·σ(2) = 3·0.880797077978
    = 2.642391233933."""
    policy, ref = t(3.5, -0.5, 1.0, 5.0), t(0.5, 0.5, 0.0, 0.0)
    labels = torch.tensor([True, False, True, False])
    out = kto_loss(policy, ref, labels, torch.tensor(1.0, dtype=F64), beta=0.5, desirable_weight=2.0, undesirable_weight=3.0)
    close(out.losses, t(0.537882842740, 0.806824264110, 1.0, 2.642391233933))
    close(out.rewards, t(1.5, -0.5, 0.5, 2.5))
    # unit weights halve/third the same terms
    unit = kto_loss(policy, ref, labels, 1.0, beta=0.5)
    close(unit.losses * t(2.0, 3.0, 2.0, 3.0), out.losses)


def test_kto_single_class_batches():
    policy = t(1.0, 2.0)
    only_undesirable = kto_loss(policy, t(0.0, 0.0), torch.tensor([False, False]), 0.0, beta=1.0)
    close(only_undesirable.losses, torch.sigmoid(policy))  # 1 − σ(0 − ρ) = σ(ρ)


def test_gradcheck_kto():
    g = torch.Generator().manual_seed(3)
    policy = torch.randn(6, dtype=F64, generator=g).requires_grad_()
    ref = torch.randn(6, dtype=F64, generator=g)
    labels = torch.tensor([True, False, True, True, False, False])
    assert torch.autograd.gradcheck(
        lambda p: kto_loss(p, ref, labels, 0.4, beta=0.3, desirable_weight=1.2, undesirable_weight=0.8).losses,
        (policy,),
    )
