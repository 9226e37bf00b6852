"""KTOObjective.loss wires the reference point z₀ (kto.md §2, pitfalls 2-3): the KL estimate comes from the
mismatched completions (column 1), summed over all processes, clamped at 0 after that sum, and detached."""

from __future__ import annotations

import math

import pytest
import torch
from objective_testing import F64, RecordingAllReduce, unpaired_context

from alignment.methods.kto import KTOObjective, KTOParams

BETA, LAMBDA_D, LAMBDA_U = 0.5, 1.0, 1.5
LABELS = [True, False, True, False]
# column 0: the example's own completion y; column 1: the mismatched completion y' (another row's)
POLICY = [[-3.0, -2.0], [-4.0, -1.0], [-2.5, -6.0], [-5.0, -3.5]]
REF = [[-3.5, -2.5], [-3.0, -2.0], [-2.0, -5.0], [-5.5, -4.0]]
RHO = [0.5, -1.0, -0.5, 0.5]  # column 0 log-ratios
RHO_MISMATCHED = [0.5, 1.0, -1.0, 0.5]  # column 1 log-ratios: sum 1.0 over 4 on this process


def hand_loss(z0: float) -> float:
    """Mean of λ_D·σ(−β(ρ − z₀)) over desirable and λ_U·σ(−β(z₀ − ρ)) over undesirable rows (kto.md eq. 7)."""

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    losses = [
        LAMBDA_D * sigmoid(-BETA * (rho - z0)) if desirable else LAMBDA_U * sigmoid(-BETA * (z0 - rho))
        for rho, desirable in zip(RHO, LABELS)
    ]
    return sum(losses) / len(losses)


def kto_loss_with(all_reduce: RecordingAllReduce):
    """(output, policy log-probs with their gradient after backward) of one KTO loss call."""
    policy = torch.tensor(POLICY, dtype=F64, requires_grad=True)
    objective = KTOObjective(KTOParams(beta=BETA, desirable_weight=LAMBDA_D, undesirable_weight=LAMBDA_U))
    out = objective.loss(
        policy, torch.tensor(REF, dtype=F64), unpaired_context(LABELS, all_reduce_sum=all_reduce)
    )
    out.loss.backward()
    return out, policy


@pytest.mark.parametrize(
    "others, z0",
    [
        ((0.0, 0.0), 0.25),  # alone: Σρ'/n = 1/4
        ((3.0, 4.0), 0.5),  # another process adds Σρ' = 3 over 4 rows: (1 + 3)/8
        ((-5.0, 4.0), 0.0),  # global mean (1 − 5)/8 < 0 clamps to 0, though this process's own mean is 1/4
    ],
)
def test_reference_point_is_the_all_reduced_mismatched_mean_clamped_at_zero(others, z0):
    all_reduce = RecordingAllReduce(others)
    out, _ = kto_loss_with(all_reduce)
    (reduced,) = all_reduce.inputs
    assert reduced.dtype == F64 and not reduced.requires_grad
    assert reduced.tolist() == [sum(RHO_MISMATCHED), len(RHO_MISMATCHED)]
    assert float(out.metrics["kl"]) == pytest.approx(z0, abs=1e-7)
    assert out.loss.item() == pytest.approx(hand_loss(z0), abs=1e-12)


def test_no_gradient_flows_through_the_reference_point():
    """With z₀ = 0.5 > 0 (unclamped) a z₀ in the graph would pass gradient to column 1; it gets none, and
    column 0 gets −∂/∂ρ of the hand loss, e.g. row 0 (desirable): λ_D·β·σ(0)·(1 − σ(0))/4 = −1/32."""
    _, policy = kto_loss_with(RecordingAllReduce((3.0, 4.0)))
    assert torch.equal(policy.grad[:, 1], torch.zeros(4, dtype=F64))
    assert float(policy.grad[0, 0]) == pytest.approx(-LAMBDA_D * BETA * 0.25 / 4, abs=1e-12)
