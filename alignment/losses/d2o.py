"""D²O loss (Duan et al., arXiv:2403.03419, §3.2 eq. 3): negatives plus K self-generated anchors.

Shapes: B = number of (prompt, negative) examples, K = self-samples per prompt.
``*_sample_logps`` ``(B, K)``, ``*_rejected_logps`` ``(B,)``, ``sample_mask`` ``(B, K)`` bool; all summed
completion log-probs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["D2OLossOutput", "d2o_loss"]


class D2OLossOutput(NamedTuple):
    """Per-example loss ``(B,)`` and detached metrics ``(B,)``.

    ``sample_rewards`` = (β/K)·Σᵢρᵢ, ``rejected_rewards`` = α·ρ_l, ``margins`` = u = the difference.
    """

    losses: Tensor
    sample_rewards: Tensor
    rejected_rewards: Tensor
    margins: Tensor


def d2o_loss(
    policy_sample_logps: Tensor,
    ref_sample_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    alpha: float,
    sample_mask: Tensor | None = None,
) -> D2OLossOutput:
    """Per-example −log σ(u), u = (β/K)·Σᵢ ρ(yᵢ) − α·ρ(y_l)  (D²O eq. 3), ``(B,)``.

    The K self-sample log-ratios are averaged INSIDE the sigmoid: one logistic term per (x, y_l), not K
    DPO pairs (spec pitfall 1). β scales only the sample side, α only the negative (α is not multiplied by β).
    ``ref_sample_logps`` plays π_r⁻ and ``ref_rejected_logps`` π_r⁺; in the paper both are the SFT model.
    ``sample_mask`` marks valid samples when a prompt has fewer than K; K is then the per-row valid count.
    Every row needs at least one valid sample.
    """
    sample_rho = policy_sample_logps - ref_sample_logps  # (B, K)
    if sample_mask is None:
        mean_sample_rho = sample_rho.mean(dim=1)
    else:
        mask = sample_mask.to(torch.bool)
        counts = mask.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError("every example needs at least one valid self-sample (a sample_mask row is all False)")
        mean_sample_rho = torch.where(mask, sample_rho, torch.zeros_like(sample_rho)).sum(dim=1) / counts
    sample_side = beta * mean_sample_rho
    rejected_side = alpha * (policy_rejected_logps - ref_rejected_logps)
    u = sample_side - rejected_side
    return D2OLossOutput(-F.logsigmoid(u), sample_side.detach(), rejected_side.detach(), u.detach())
