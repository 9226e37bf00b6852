"""D²O loss and CTRL calibration/transforms (float64, atol 1e-9)."""

import math

import pytest
import torch
from loss_testing import ATOL, F64, close, t  # noqa: E402,F401

from alignment.losses import (
    calibrated_reward,
    d2o_loss,
    dpo_loss,
    exp_transform,
    identity_transform,
    neg_exp_transform,
)


def test_d2o_by_hand():
    """K = 3, β = 0.3, α = 0.5. Sample log-ratios (2, 4, 6) → mean 4 → β·4 = 1.2; negative ρ_l = 0.4 →
    α·0.4 = 0.2; u = 1.0 → −log σ(1) = 0.313261687518.
    Row 2 masks its third sample: (1, −1) → mean 0; ρ_l = −4 → −α·ρ_l = 2; u = 2 → 0.126928011043."""
    ps = t(2.0, 4.0, 6.0, 1.0, -1.0, 100.0).view(2, 3)
    rs = torch.zeros(2, 3, dtype=F64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out = d2o_loss(ps, rs, t(0.4, -4.0), t(0.0, 0.0), beta=0.3, alpha=0.5, sample_mask=mask)
    close(out.losses, t(0.313261687518, 0.126928011043))
    close(out.sample_rewards, t(1.2, 0.0))
    close(out.rejected_rewards, t(0.2, -2.0))
    close(out.margins, t(1.0, 2.0))
    unmasked = d2o_loss(ps[:1], rs[:1], t(0.4), t(0.0), beta=0.3, alpha=0.5)
    close(unmasked.losses, t(0.313261687518))
    with pytest.raises(ValueError):
        d2o_loss(ps, rs, t(0.4, -4.0), t(0.0, 0.0), beta=0.3, alpha=0.5, sample_mask=torch.zeros(2, 3, dtype=torch.bool))


def test_d2o_k1_alpha_equals_beta_is_dpo():
    """K = 1, α = β: u = β·ρ_1 − β·ρ_l = β·h, DPO's logit with y_1 as the chosen answer."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, dtype=F64, generator=g) for _ in range(4))
    d2o = d2o_loss(pc[:, None], rc[:, None], pr, rr, beta=0.2, alpha=0.2)
    close(d2o.losses, dpo_loss(pc, pr, rc, rr, beta=0.2).losses)


def test_d2o_averages_inside_the_sigmoid():
    """Samples (0, 10), β = 1, α = 0: −log σ(5) = 0.006715348489, not ½(−log σ(0) − log σ(10)) = 0.346596."""
    out = d2o_loss(t(0.0, 10.0).view(1, 2), torch.zeros(1, 2, dtype=F64), t(0.0), t(0.0), beta=1.0, alpha=0.0)
    close(out.losses, t(math.log1p(math.exp(-5.0))))
    close(out.losses, t(0.006715348489))


def test_gradcheck_d2o():
    g = torch.Generator().manual_seed(1)
    ps = torch.randn(3, 4, dtype=F64, generator=g).requires_grad_()
    pr = torch.randn(3, dtype=F64, generator=g).requires_grad_()
    rs, rr = torch.randn(3, 4, dtype=F64, generator=g), torch.randn(3, dtype=F64, generator=g)
    mask = torch.tensor([[True] * 4, [True, False, True, False], [False, False, False, True]])
    assert torch.autograd.gradcheck(
        lambda a, b: d2o_loss(a, rs, b, rr, beta=0.1, alpha=0.1, sample_mask=mask).losses, (ps, pr)
    )


def test_calibrated_reward_by_hand():
    """Reference rewards (1, 2, 2, 3): r = 2 beats 1 (1), ties two 2s (0.5 each), loses to 3 → 2/4 = 0.5;
    r = 5 → 1.0; r = 0 → 0.0; r = 2.5 → 3/4."""
    ref = t(1.0, 2.0, 2.0, 3.0).expand(4, 4)
    close(calibrated_reward(t(2.0, 5.0, 0.0, 2.5), ref), t(0.5, 1.0, 0.0, 0.75))
    mask = torch.tensor([[True, True, True, False]] * 4)  # drop the 3: r = 2 → (1 + 0.5 + 0.5)/3
    close(calibrated_reward(t(2.0, 5.0, 0.0, 2.5), ref, mask), t(2.0 / 3.0, 1.0, 0.0, 1.0))


def test_calibration_invariant_to_monotone_rescaling():
    g = torch.Generator().manual_seed(2)
    r, ref = torch.randn(6, dtype=F64, generator=g), torch.randn(6, 9, dtype=F64, generator=g)
    close(calibrated_reward(r, ref), calibrated_reward(torch.exp(3 * r) + 7, torch.exp(3 * ref) + 7))


def test_transforms():
    """exp(2·0.5) = e = 2.718281828459; −exp(−2·0.5) = −0.367879441171; identity keeps u."""
    u = t(0.0, 0.5, 1.0)
    close(identity_transform(u), u)
    close(exp_transform(u, 2.0), t(1.0, 2.718281828459, 7.389056098931))
    close(neg_exp_transform(u, 2.0), t(-1.0, -0.367879441171, -0.135335283237))
    assert bool((neg_exp_transform(u, 2.0).diff() > 0).all())  # increasing in u
    x = torch.rand(4, dtype=F64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: exp_transform(v, 3.0) + neg_exp_transform(v, 3.0), (x,))
