"""Confidence-smoothed DPO of Selfie/SPA (Kim et al., arXiv:2406.04412, §4 "self-refinement"; spec §4c).

Shapes: B = number of self-labelled pairs; ``*_logps`` summed completion log-probs ``(B,)``;
``confident`` ``(B,)`` bool.
"""

from __future__ import annotations

from torch import Tensor

from alignment.losses.dpo import (
    PreferenceLossOutput,
    _with_rewards,
    preference_margin,
    sigmoid_preference_loss,
)

__all__ = ["confidence_smoothed_dpo_loss"]


def confidence_smoothed_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    confident: Tensor,
    *,
    beta: float,
    alpha: float,
) -> PreferenceLossOutput:
    """Per-pair L = −(1 − α + α·c)·log σ(βΔ) − (α − α·c)·log σ(−βΔ), c = 1[confident], ``(B,)``.

    Confident pairs (c = 1, the judge's z above the rolling quantile τ) get plain DPO; the others get
    label-smoothed DPO with weight α on the flipped label (smoothing, not flipping; spec pitfall 7).
    Computing c (extrapolated logits, quantile window) and the warm-up (α = 0 for the first 20% of steps)
    are the trainer's job.
    """
    if not 0.0 <= alpha < 0.5:
        raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
    margin = preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    smoothing = alpha * (1.0 - confident.to(margin.dtype))
    losses = sigmoid_preference_loss(margin, beta=beta, label_smoothing=smoothing)
    return _with_rewards(losses, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
