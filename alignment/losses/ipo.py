"""IPO loss (Azar et al. 2024, arXiv:2310.12036, eq. 17 / Algorithm 1).

Shapes: B = number of preference pairs; every ``*_logps`` is a summed completion log-probability ``(B,)``;
``*_lengths`` are completion token counts ``(B,)``.
"""

from __future__ import annotations

from torch import Tensor

from alignment.losses.dpo import PreferenceLossOutput, _with_rewards, log_ratio

__all__ = ["ipo_loss"]


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> PreferenceLossOutput:
    """Per-pair (h − 1/(2β))², with β playing the paper's τ (IPO eq. 17).

    h = ρ(y_w) − ρ(y_l) with summed log-probs when no lengths are given (the paper's form). When lengths are
    given, each ρ is divided by its completion token count (clamped at 1) before taking the difference: the
    length-normalised form of TRL's offline ``DPOTrainer(loss_type="ipo")``, which its authors confirmed
    matches the paper's reported results. The trainer passes lengths iff ``length_normalize``.

    Rewards in the output are β·ρ on summed log-probs (not normalised), as TRL logs them.
    """
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("pass both chosen_lengths and rejected_lengths, or neither")
    chosen = log_ratio(policy_chosen_logps, ref_chosen_logps)
    rejected = log_ratio(policy_rejected_logps, ref_rejected_logps)
    if chosen_lengths is not None and rejected_lengths is not None:
        chosen = chosen / chosen_lengths.to(chosen.dtype).clamp(min=1.0)
        rejected = rejected / rejected_lengths.to(rejected.dtype).clamp(min=1.0)
    losses = (chosen - rejected - 1.0 / (2.0 * beta)) ** 2
    return _with_rewards(losses, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
