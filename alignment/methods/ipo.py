"""IPO: Azar et al. 2024, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
arXiv:2310.12036 (Eq. 17): (h − 1/(2τ))², h = (logπ_w − logπref_w) − (logπ_l − logπref_l), τ = `beta`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.losses.dpo import PreferenceLossOutput
from alignment.losses.ipo import ipo_loss
from alignment.methods.dpo import DPOObjective
from alignment.methods.spec import MethodSpec, register
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class IPOParams:
    beta: float = param(0.1, help="Regularisation τ; the log-ratio gap is regressed to 1/(2τ) (5 at 0.1).")
    length_normalize: bool = param(
        True,
        help="Divide each log-ratio by its completion length, as TRL's offline IPO (confirmed with the "
        "authors); "
        "false = summed log-probs, as written in the paper.",
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")


class IPOObjective(DPOObjective):
    """IPO (Azar et al. 2023, eq. 17): (h − 1/(2β))², h from per-token log-ratios when `length_normalize`."""

    def pair_losses(
        self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, batch: dict
    ) -> PreferenceLossOutput:
        lengths = (
            batch["sequences"].completion_lengths().to(policy_logps.device)
            if self.params.length_normalize
            else None
        )
        return ipo_loss(
            policy_logps[:, 0],
            policy_logps[:, 1],
            ref_logps[:, 0],
            ref_logps[:, 1],
            beta=self.params.beta,
            chosen_lengths=None if lengths is None else lengths[:, 0],
            rejected_lengths=None if lengths is None else lengths[:, 1],
        )


register(
    MethodSpec(
        name="ipo",
        params=IPOParams,
        formats=("paired",),
        sources=("static", "on_policy"),
        description="Identity Preference Optimization: squared loss on the log-ratio gap (Azar et al. 2024).",
        objective=IPOObjective,
    )
)
