"""KTO and BCO compute a batch statistic inside the loss (KTO's reference point z₀, BCO's reward shift δ).

Gradient accumulation: in the trainer each micro-batch's loss sees the sums of that micro-batch only,
all-reduced over the data-parallel processes but not over the accumulation steps. So batch 8 × accumulation 1
and batch 4 × accumulation 2 take the same optimizer step only while the statistic does not depend on the
split: at the first step (policy = reference, so z₀ = δ = 0 in every micro-batch; the trainer test covers it)
or once z₀ / δ are shared. After that they are different estimators, as in the reference implementations
(HALOs and TRL compute KTO's KL term per micro-batch; TRL updates BCO's running mean per micro-batch):
    KTO: z₀ = max(0, mean ρ') over 4 mismatched pairs instead of 8, and clamped per micro-batch;
    BCO: δ of the first micro-batch folds in only its own 4 rewards (the second sees all 8, as the full
         batch does), because δ is updated before each micro-batch's loss.
What must hold is that, given the same z₀ / δ, splitting the batch changes nothing: this is also why
2 processes × batch 4 equal 1 process × batch 8, their sums being all-reduced.
"""

from __future__ import annotations

import pytest
import torch
from objective_testing import F64, RecordingAllReduce, unpaired_context

from alignment.methods.bco import BCOObjective, BCOParams
from alignment.methods.kto import KTOObjective, KTOParams

LABELS = [True, False, True, True, False, False, True, False]
UDM_WEIGHTS = [1.0, 0.7, 1.0, 1.0, 2.5, 0.5, 1.0, 1.3]
HALVES = (slice(0, 4), slice(4, 8))


def kto() -> KTOObjective:
    return KTOObjective(KTOParams(beta=0.5, desirable_weight=1.0, undesirable_weight=1.5))


def bco() -> BCOObjective:
    return BCOObjective(BCOParams(beta=0.5, udm=True))


def log_probs(objective, rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (rows, C) policy (requires grad) and reference log-probs, log-ratios of order 1; the mismatched
    column of KTO is shifted up so that z₀ > 0 and differs between the two halves."""
    generator = torch.Generator().manual_seed(0)
    ref = -5 + torch.randn(rows, objective.num_completions, dtype=F64, generator=generator)
    ratios = torch.randn(rows, objective.num_completions, dtype=F64, generator=generator)
    if objective.num_completions == 2:
        ratios[:, 1] += torch.linspace(0.0, 2.0, rows, dtype=F64)
    return (ref + ratios).requires_grad_(), ref


def context(rows=slice(None), **kwargs):
    return unpaired_context(LABELS[rows], udm_weight=UDM_WEIGHTS[rows], **kwargs)


def gradient(loss: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, policy)
    return grad


@pytest.mark.parametrize("make", [kto, bco], ids=["kto", "bco"])
def test_splitting_the_batch_keeps_the_gradient_when_z0_or_delta_is_shared(make):
    """The full batch's all-reduced sums handed to each half (what a second process's all-reduce gives) make
    the mean of the two halves' losses the full batch's loss, gradient included. Each half with its own sums,
    as accumulation steps in one process get them, gives another gradient (see the module docstring)."""
    policy, ref = log_probs(make())
    record = RecordingAllReduce()
    full = gradient(make().loss(policy, ref, context(all_reduce_sum=record)).loss, policy)
    (shared_sums,) = record.inputs
    split = sum(
        make().loss(policy[h], ref[h], context(h, all_reduce_sum=lambda _: shared_sums)).loss for h in HALVES
    )
    torch.testing.assert_close(gradient(split / 2, policy), full, rtol=0, atol=1e-12)
    accumulating = make()  # one process, one objective: micro-batches in turn, as the trainer runs them
    accumulated = sum(accumulating.loss(policy[h], ref[h], context(h)).loss for h in HALVES)
    assert (gradient(accumulated / 2, policy) - full).abs().max() > 1e-4  # float64 noise: ~1e-16
