"""DPO loss (Rafailov et al. 2023, arXiv:2305.18290) and the pairwise pieces every preference loss reuses.

Shapes: B = number of preference pairs. Every ``*_logps`` argument is a summed completion log-probability,
shape ``(B,)`` (prompt and padding masked out; spec ``dpo_ipo.md`` §1).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "PreferenceLossOutput",
    "dpo_loss",
    "log_ratio",
    "preference_margin",
    "sigmoid_preference_loss",
]


class PreferenceLossOutput(NamedTuple):
    """Per-pair loss plus detached metrics, each ``(B,)``.

    ``chosen_rewards``/``rejected_rewards`` are the implicit rewards β·(log π − log π_ref) logged as
    ``rewards/chosen`` and ``rewards/rejected``; ``margins`` = chosen − rejected (``rewards/margins``).
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    margins: Tensor


def log_ratio(policy_logps: Tensor, ref_logps: Tensor) -> Tensor:
    """ρ(x, y) = log π_θ(y|x) − log π_ref(y|x), shape ``(B,)`` (or any matching shape)."""
    return policy_logps - ref_logps


def preference_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """h = ρ(x, y_w) − ρ(x, y_l), shape ``(B,)``: the DPO logit before β (DPO eq. 7, IPO eq. 17).

    Sign convention: positive when the policy has moved towards the chosen answer relative to the reference.
    """
    return log_ratio(policy_chosen_logps, ref_chosen_logps) - log_ratio(policy_rejected_logps, ref_rejected_logps)


def sigmoid_preference_loss(margin: Tensor, *, beta: float, label_smoothing: float | Tensor = 0.0) -> Tensor:
    """Per-pair −(1−ε)·log σ(β·h) − ε·log σ(−β·h), shape ``(B,)``.

    ε = 0 is DPO eq. 7; ε > 0 is "conservative" DPO (labels flipped with probability ε). ``label_smoothing``
    may be a ``(B,)`` tensor for per-pair smoothing (used by the confidence-smoothed DPO of ``spa.py``).
    """
    z = beta * margin
    loss = -F.logsigmoid(z)
    if isinstance(label_smoothing, Tensor) or label_smoothing != 0.0:
        # written as a mix so that ε = 0 is bit-identical to plain DPO
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> PreferenceLossOutput:
    """DPO per-pair loss −log σ(β·[ρ(y_w) − ρ(y_l)]) (DPO eq. 7), optionally label-smoothed.

    All inputs ``(B,)``; gradients flow into the policy log-probs only (reference inputs are treated as data).
    Returns per-pair losses ``(B,)``; reduce (mean) in the trainer.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    margin = preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    losses = sigmoid_preference_loss(margin, beta=beta, label_smoothing=label_smoothing)
    return _with_rewards(losses, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


def _with_rewards(
    losses: Tensor,
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> PreferenceLossOutput:
    """Attach the detached implicit rewards β·ρ (summed log-probs, as TRL logs them)."""
    with torch.no_grad():
        chosen = beta * log_ratio(policy_chosen_logps, ref_chosen_logps).detach()
        rejected = beta * log_ratio(policy_rejected_logps, ref_rejected_logps).detach()
    return PreferenceLossOutput(losses, chosen, rejected, chosen - rejected)
