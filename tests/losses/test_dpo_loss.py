"""DPO, IPO and the confidence-smoothed DPO against hand arithmetic (float64, atol 1e-9)."""

import math

import pytest
import torch
from loss_testing import ATOL, F64, close, t  # noqa: E402,F401

from alignment.losses import confidence_smoothed_dpo_loss, dpo_loss, ipo_loss, preference_margin


def test_dpo_margins_0_10_20():
    """Margins h = (0, 10, 20) at β = 0.1 give z = βh = (0, 1, 2) and −log σ(z) = log(1 + e^{−z}):
    log 2 = 0.693147180560, log(1 + e^{−1}) = 0.313261687518, log(1 + e^{−2}) = 0.126928011043.
    Inputs: chosen log-ratios (−5, 3, 20), rejected (−5, −7, 0) with reference log-probs all −1:
    policy_chosen = (−6, 2, 19), policy_rejected = (−6, −8, −1)."""
    ref = t(-1.0, -1.0, -1.0)
    out = dpo_loss(t(-6.0, 2.0, 19.0), t(-6.0, -8.0, -1.0), ref, ref, beta=0.1)
    close(out.losses, t(0.693147180560, 0.313261687518, 0.126928011043))
    close(out.chosen_rewards, t(-0.5, 0.3, 2.0))  # β·ρ_w
    close(out.rejected_rewards, t(-0.5, -0.7, 0.0))
    close(out.margins, t(0.0, 1.0, 2.0))
    assert not out.chosen_rewards.requires_grad


def test_preference_margin_sign():
    """h = (pc − rc) − (pr − rr) = (−1 − (−3)) − (−4 − (−2)) = 2 − (−2) = 4."""
    close(preference_margin(t(-1.0), t(-4.0), t(-3.0), t(-2.0)), t(4.0))


def test_label_smoothing_by_hand_and_zero_limit():
    """ε = 0.1, z = 1: 0.9·log(1+e^{−1}) + 0.1·log(1+e^{1}) = 0.9·0.313261687518 + 0.1·1.313261687518
    = 0.281935518766 + 0.131326168752 = 0.413261687518. ε = 0 is bit-identical to plain DPO."""
    args = (t(2.0), t(-8.0), t(0.0), t(0.0))  # h = 10
    close(dpo_loss(*args, beta=0.1, label_smoothing=0.1).losses, t(0.413261687518))
    x = torch.randn(4, 6, dtype=F64, generator=torch.Generator().manual_seed(0))
    plain = -torch.nn.functional.logsigmoid(0.3 * ((x[0] - x[2]) - (x[1] - x[3])))
    assert torch.equal(dpo_loss(*x[:4], beta=0.3, label_smoothing=0.0).losses, plain)
    with pytest.raises(ValueError):
        dpo_loss(*args, beta=0.1, label_smoothing=0.5)


def test_ipo_summed_by_hand():
    """β = 0.1 → target 1/(2β) = 5. h = (2 − 0) − (−1 − 0) = 3 → (3 − 5)² = 4; h = 5 → 0; h = 9 → 16."""
    zero = t(0.0, 0.0, 0.0)
    out = ipo_loss(t(2.0, 5.0, 4.0), t(-1.0, 0.0, -5.0), zero, zero, beta=0.1)
    close(out.losses, t(4.0, 0.0, 16.0))


def test_ipo_length_normalised_by_hand():
    """β = 0.5 → target 1. Chosen ρ = 6 over 3 tokens → 2; rejected ρ = −4 over 4 tokens → −1; h = 3,
    loss (3 − 1)² = 4. Second pair: ρ_w = 1 over 2 tokens = 0.5, ρ_l = 1 over 1 token = 1, h = −0.5,
    loss (−1.5)² = 2.25. Without lengths the same pairs give (10 − 1)² = 81 and (0 − 1)² = 1."""
    pc, pr, zero = t(6.0, 1.0), t(-4.0, 1.0), t(0.0, 0.0)
    normed = ipo_loss(pc, pr, zero, zero, beta=0.5, chosen_lengths=torch.tensor([3, 2]), rejected_lengths=torch.tensor([4, 1]))
    close(normed.losses, t(4.0, 2.25))
    close(normed.chosen_rewards, t(3.0, 0.5))  # rewards stay β·ρ on summed log-probs
    close(ipo_loss(pc, pr, zero, zero, beta=0.5).losses, t(81.0, 1.0))
    with pytest.raises(ValueError):
        ipo_loss(pc, pr, zero, zero, beta=0.5, chosen_lengths=torch.tensor([3, 2]))


def test_confidence_smoothed_dpo():
    """α = 0.1, β = 0.1, h = 10 (z = 1). Confident: plain DPO 0.313261687518. Not confident: smoothing α,
    0.9·0.313261687518 + 0.1·1.313261687518 = 0.413261687518 (same as cDPO with ε = α)."""
    pc, pr, zero = t(10.0, 10.0), t(0.0, 0.0), t(0.0, 0.0)
    out = confidence_smoothed_dpo_loss(pc, pr, zero, zero, torch.tensor([True, False]), beta=0.1, alpha=0.1)
    close(out.losses, t(0.313261687518, 0.413261687518))
    all_conf = confidence_smoothed_dpo_loss(pc, pr, zero, zero, torch.tensor([True, True]), beta=0.1, alpha=0.1)
    close(all_conf.losses, dpo_loss(pc, pr, zero, zero, beta=0.1).losses)
    none_conf = confidence_smoothed_dpo_loss(pc, pr, zero, zero, torch.tensor([False, False]), beta=0.1, alpha=0.1)
    close(none_conf.losses, dpo_loss(pc, pr, zero, zero, beta=0.1, label_smoothing=0.1).losses)


def _inputs(n: int, b: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, dtype=F64, generator=g).mul(3).requires_grad_() for _ in range(n)]


def test_gradcheck_pairwise_losses():
    x = _inputs(4, 5, 1)
    assert torch.autograd.gradcheck(lambda *a: dpo_loss(*a, beta=0.2, label_smoothing=0.15).losses, x)
    lengths = torch.tensor([1, 2, 3, 4, 5])
    assert torch.autograd.gradcheck(
        lambda *a: ipo_loss(*a, beta=0.2, chosen_lengths=lengths, rejected_lengths=lengths.flip(0)).losses, x
    )
    conf = torch.tensor([True, False, True, False, False])
    assert torch.autograd.gradcheck(lambda *a: confidence_smoothed_dpo_loss(*a, conf, beta=0.2, alpha=0.1).losses, x)


def test_dpo_gradient_matches_paper_form():
    """DPO §4: ∂L/∂logπ(y_w) = −β·σ(r_l − r_w) with r = β·ρ; ∂L/∂logπ(y_l) = +β·σ(r_l − r_w)."""
    pc, pr, rc, rr = _inputs(4, 3, 2)
    dpo_loss(pc, pr, rc, rr, beta=0.1).losses.sum().backward()
    weight = torch.sigmoid(0.1 * ((pr - rr) - (pc - rc))).detach()
    close(pc.grad, -0.1 * weight)
    close(pr.grad, 0.1 * weight)
    assert rc.grad is not None  # references are plain inputs; the trainer passes them without grad
    assert math.isclose(float(rc.grad.sum()), float(-pc.grad.sum()), abs_tol=ATOL)
