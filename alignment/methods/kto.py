"""KTO: Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv:2402.01306.

Unpaired (x, y, desirable?) data; value λ_y·σ(β(ρ − z₀)) around a detached batch KL reference point z₀.
Paired data is split into one desirable and one undesirable example per pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.losses.kto import kto_loss, kto_reference_point_from_sums
from alignment.methods.objective import (
    BuildContext,
    LossOutput,
    Objective,
    StepContext,
    unpaired_examples,
    unpaired_metrics,
)
from alignment.methods.spec import MethodSpec, register
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class KTOParams:
    beta: float = param(0.1, help="β inside the sigmoid, σ(β(ρ − z₀)). Paper: 0.1.")
    desirable_weight: float = param(1.0, help="λ_D; choose λ_D·n_D / (λ_U·n_U) in [1, 4/3] (paper Eq. 8).")
    undesirable_weight: float = param(1.0, help="λ_U, the weight of undesirable examples.")

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        check(self.desirable_weight > 0, "desirable_weight", f"must be > 0, got {self.desirable_weight}")
        check(
            self.undesirable_weight > 0, "undesirable_weight", f"must be > 0, got {self.undesirable_weight}"
        )


class KTOObjective(Objective):
    """KTO (Ethayarajh et al. 2024, eq. 7) with the detached, clamped KL reference point z₀.

    Completions: (y, y') where y' is the completion of another example (the mismatched pair). Deviation from
    HALOs/TRL, who pair x_j with y_{j+1} inside each batch: we fix the pairing once per dataset, x_j with
    y_σ(j) for a seeded cyclic shift σ over a random permutation. The estimator of KL(π‖π_ref) on the prompt
    distribution is the same, but it survives shuffling and lets the reference log-probs of y' be
    precomputed. z₀ = max(0, Σρ'/n) is summed over all processes before clamping (spec pitfall 2).
    """

    num_completions = 2
    example_columns = ("label",)

    def build_examples(self, dataset, ctx: BuildContext):
        return self.keep_columns(
            unpaired_examples(dataset, with_mismatched=True, seed=ctx.seed, max_length=ctx.max_length)
        )

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        mismatched = (policy_logps[:, 1] - ref_logps[:, 1]).detach().double()
        total = ctx.all_reduce_sum(
            torch.stack(
                [
                    mismatched.sum(),
                    torch.tensor(float(mismatched.numel()), dtype=torch.float64, device=mismatched.device),
                ]
            )
        )
        z0 = kto_reference_point_from_sums(total[0], total[1])
        labels = ctx.batch["label"].bool()
        out = kto_loss(
            policy_logps[:, 0],
            ref_logps[:, 0],
            labels,
            z0.to(policy_logps.dtype),
            beta=self.params.beta,
            desirable_weight=self.params.desirable_weight,
            undesirable_weight=self.params.undesirable_weight,
        )
        return LossOutput(
            out.losses.mean(), {**unpaired_metrics(out.rewards, labels, policy_logps[:, 0]), "kl": z0.float()}
        )


register(
    MethodSpec(
        name="kto",
        params=KTOParams,
        formats=("unpaired", "paired"),
        description="Kahneman-Tversky Optimization on thumbs-up/down examples (Ethayarajh et al. 2024).",
        objective=KTOObjective,
    )
)
