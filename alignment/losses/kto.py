"""KTO loss (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7) and its reference point z_0.

Shapes: B = number of unpaired examples. ``policy_logps``/``ref_logps`` are summed completion log-probs
``(B,)``; ``labels`` is ``(B,)`` bool (True = desirable). The reference point is a 0-dim tensor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "KTOLossOutput",
    "kto_loss",
    "kto_reference_point",
    "kto_reference_point_from_sums",
    "mismatched_indices",
]


class KTOLossOutput(NamedTuple):
    """Per-example loss ``(B,)``, detached rewards β·ρ ``(B,)`` and the reference point used (0-dim)."""

    losses: Tensor
    rewards: Tensor
    kl: Tensor


def mismatched_indices(batch_size: int, *, shift: int = 1, device: torch.device | str | None = None) -> Tensor:
    """Completion index for each prompt's mismatched pair, ``(batch_size,)`` long: idx[j] = (j + shift) mod B.

    The KL batch pairs prompt x_j with completion y_{idx[j]}. ``shift=1`` is the spec's y'_j = y_{j+1}
    (last wraps to first); TRL 1.16 rotates the other way (x_1 gets y_B, x_j gets y_{j-1}), i.e. ``shift=-1``.
    Either way every completion appears exactly once, so z_0 averages the same completions the batch scores.
    Requires B > 1, otherwise the "mismatched" pair is the example itself (spec pitfall 3).
    """
    if batch_size < 2:
        raise ValueError(f"KTO's mismatched pairs need a batch size > 1, got {batch_size}")
    if shift % batch_size == 0:
        raise ValueError(f"shift {shift} maps every example to itself for batch size {batch_size}")
    return (torch.arange(batch_size, device=device) + shift) % batch_size


def kto_reference_point_from_sums(logratio_sum: Tensor | float, count: Tensor | float) -> Tensor:
    """z_0 = max(0, Σρ' / n), detached, 0-dim.

    Takes the sum of mismatched log-ratios and their count so a data-parallel trainer can all-reduce both
    first (HALOs' global mean); clamping happens after the global average, never per rank. n = 0 gives 0.
    """
    logratio_sum = torch.as_tensor(logratio_sum).detach()
    count = torch.as_tensor(count, dtype=logratio_sum.dtype, device=logratio_sum.device).detach()
    mean = torch.where(count > 0, logratio_sum / count.clamp(min=1e-12), torch.zeros_like(logratio_sum))
    return mean.clamp(min=0.0)


def kto_reference_point(policy_kl_logps: Tensor, ref_kl_logps: Tensor) -> Tensor:
    """z_0 = max(0, mean_j [log π_θ(y'_j|x_j) − log π_ref(y'_j|x_j)]), detached, 0-dim (single process).

    Inputs ``(B,)`` are log-probs of the MISMATCHED pairs (see ``mismatched_indices``). No gradient flows
    through z_0 (the paper: back-propagating through it destabilises training).
    """
    logratios = (policy_kl_logps - ref_kl_logps).detach()
    return kto_reference_point_from_sums(logratios.sum(), logratios.numel())


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    kl_estimate: Tensor | float,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> KTOLossOutput:
    """Per-example KTO loss (eq. 7), ``(B,)``:

        desirable:    λ_D · (1 − σ(β·(ρ − z_0)))
        undesirable:  λ_U · (1 − σ(β·(z_0 − ρ)))

    ρ = log π_θ(y|x) − log π_ref(y|x); ``kl_estimate`` is z_0 from ``kto_reference_point`` (already clamped;
    detached again here). Losses keep the input order; their plain mean equals TRL's mean over
    [desirable losses, undesirable losses].
    """
    labels = labels.to(torch.bool)
    rho = policy_logps - ref_logps
    z0 = torch.as_tensor(kl_estimate, dtype=rho.dtype, device=rho.device).detach()
    # 1 − σ(a) written as σ(−a) (keeps precision for tiny losses); a = β(ρ − z_0) or β(z_0 − ρ)
    signed = torch.where(labels, rho - z0, z0 - rho)
    weights = torch.where(
        labels,
        torch.as_tensor(desirable_weight, dtype=rho.dtype, device=rho.device),
        torch.as_tensor(undesirable_weight, dtype=rho.dtype, device=rho.device),
    )
    losses = weights * torch.sigmoid(-beta * signed)
    return KTOLossOutput(losses, (beta * rho).detach(), z0)
