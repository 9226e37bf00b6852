"""InfAlign / CTRL reward calibration and transforms (Balashankar et al., arXiv:2412.19792; spec §2 steps 1-2).

Shapes: B = number of scored completions, M = reference samples per prompt; ``rewards`` ``(B,)``,
``reference_rewards`` ``(B, M)`` (row b holds the rewards of M samples from π_ref for b's prompt).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["calibrated_reward", "exp_transform", "identity_transform", "neg_exp_transform"]


def calibrated_reward(rewards: Tensor, reference_rewards: Tensor, reference_mask: Tensor | None = None) -> Tensor:
    """Ĉ(x, y) = (1/M)·Σ_m (1[r(x,z_m) < r(x,y)] + ½·1[r(x,z_m) = r(x,y)]), ``(B,)`` in [0, 1].

    The Monte-Carlo estimate of P_{z∼π_ref}[r(z) < r(y)] + ½P[r(z) = r(y)] (spec §2 step 1). Not
    differentiable (a rank); ``reference_mask`` ``(B, M)`` bool drops missing reference samples per row.
    """
    r = rewards.unsqueeze(-1)
    score = (reference_rewards < r).to(torch.float64) + 0.5 * (reference_rewards == r).to(torch.float64)
    if reference_mask is None:
        out = score.mean(dim=-1)
    else:
        mask = reference_mask.to(torch.bool)
        out = (score * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return out.to(rewards.dtype if rewards.is_floating_point() else torch.float64)


def identity_transform(u: Tensor) -> Tensor:
    """Φ(u) = u: exactly optimal for the standard win rate (spec §2 step 2)."""
    return u


def exp_transform(u: Tensor, t: float) -> Tensor:
    """Φ_t(u) = exp(t·u), t > 0: Best-of-N (upper-tail emphasis). Ranges over [1, eᵗ]; rescale β accordingly."""
    return torch.exp(t * u)


def neg_exp_transform(u: Tensor, t: float) -> Tensor:
    """Φ_t(u) = −exp(−t·u), t > 0: Worst-of-N / BoN jailbreaking (lower tail); increasing in u."""
    return -torch.exp(-t * u)
