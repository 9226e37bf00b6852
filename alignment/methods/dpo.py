"""DPO: Rafailov et al. 2023, "Direct Preference Optimization", arXiv:2305.18290 (Eq. 7).

Paired data (x, y_w, y_l); loss -log σ(β[(logπ_w − logπref_w) − (logπ_l − logπref_l)]), optionally with
conservative label smoothing ε (not in the paper; -(1−ε)·log σ(z) − ε·log σ(−z)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.losses.dpo import PreferenceLossOutput, dpo_loss
from alignment.methods.objective import (
    BuildContext,
    LossOutput,
    Objective,
    StepContext,
    paired_examples,
    pairwise_metrics,
)
from alignment.methods.spec import MethodSpec, register
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class DPOParams:
    beta: float = param(0.1, help="KL strength β: implicit reward = β·(logπ − logπref). Paper: 0.1.")
    label_smoothing: float = param(
        0.0, help="Conservative DPO: assumed probability ε that a preference label is flipped, in [0, 0.5)."
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        check(
            0 <= self.label_smoothing < 0.5,
            "label_smoothing",
            f"must be in [0, 0.5), got {self.label_smoothing}",
        )


class DPOObjective(Objective):
    """DPO (Rafailov et al. 2023, eq. 7): completions (chosen, rejected); −log σ(β·margin), label-smoothed."""

    num_completions = 2

    def build_examples(self, dataset, ctx: BuildContext):
        return paired_examples(dataset, self)

    def pair_losses(
        self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, batch: dict
    ) -> PreferenceLossOutput:
        return dpo_loss(
            policy_logps[:, 0],
            policy_logps[:, 1],
            ref_logps[:, 0],
            ref_logps[:, 1],
            beta=self.params.beta,
            label_smoothing=self.params.label_smoothing,
        )

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        out = self.pair_losses(policy_logps, ref_logps, ctx.batch)
        return LossOutput(
            out.losses.mean(), pairwise_metrics(out.chosen_rewards, out.rejected_rewards, policy_logps)
        )


register(
    MethodSpec(
        name="dpo",
        params=DPOParams,
        formats=("paired",),
        sources=("static", "on_policy"),
        description="Direct Preference Optimization on chosen/rejected pairs (Rafailov et al. 2023).",
        objective=DPOObjective,
    )
)
