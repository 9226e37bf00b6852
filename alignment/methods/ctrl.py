"""CTRL, "calibrate and transform" RL: InfAlign (Balashankar et al., "InfAlign: Inference-aware language model
alignment", arXiv:2412.19792, ICML 2025), Algorithm 1.

For an inference-time procedure T (best-of-N, worst-of-N), the policy that maximises T's win rate against π_ref
under a KL budget is the KL-regularised RLHF optimum of a transformed calibrated reward:

1. calibrate: C(x, y) = P_{z~π_ref}[r(x,z) < r(x,y)] + ½·P[r(x,z) = r(x,y)], estimated against K reference
   rollouts per training prompt, sampled once before training and cached on disk (the `calibrated`
   labeller);
2. transform: identity (plain win rate: exactly optimal), `bon` exp(t·u) for best-of-N, `won` −exp(−t·u) for
   worst-of-N, each normalised to [0, 1] (`losses.ctrl.normalized_transform`: only β's scale changes);
3. reinforce: KL-regularised RL on Φ̃(C). The paper uses PPO; this is RLOO (`methods.rloo`, why there).

`t` for a target N comes from the analytic tool of the spec (§3, `losses.ctrl.pick_t`): under π_ref, C is
uniform, so the tilted optimum's KL and best/worst-of-N win rates are integrals over [0, 1] whatever the
prompt or reward; t is the value whose optimum wins most at the KL budget `target_kl` (docs/ctrl.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from alignment.losses.ctrl import normalized_transform, pick_t
from alignment.methods.objective import StepContext
from alignment.methods.rloo import RLOOObjective
from alignment.methods.spec import ON_POLICY_FORMATS, MethodSpec, register
from alignment.recipe.fields import check, param

logger = logging.getLogger("alignment")


@dataclass(frozen=True, kw_only=True)
class CTRLParams:
    beta: float = param(
        0.05,
        help="KL coefficient β on the normalised transformed reward Φ̃(C) ∈ [0, 1] (the same scale for every "
        "transform).",
    )
    transform: Literal["identity", "bon", "won"] = param(
        "bon",
        help="Φ: identity (plain win rate), bon = exp(t·u) (best-of-N), won = −exp(−t·u) (worst-of-N).",
    )
    t: float | None = param(
        None,
        help="Exponent of the bon/won transform, > 0; null: chosen by the analytic tool for target_n at "
        "target_kl.",
    )
    target_n: int = param(
        4, help="The N of best-/worst-of-N that t is chosen for (pitfall 4: evaluate at it)."
    )
    target_kl: float = param(
        1.0, help="The KL budget (nats per sequence) at which the tool compares t values."
    )
    reference_samples: int = param(
        16, help="K reference rollouts per training prompt from π_ref that calibrate the reward (K >= 2)."
    )

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        check(self.t is None or self.t > 0, "t", f"must be > 0 (or null: chosen for target_n), got {self.t}")
        check(self.target_n >= 1, "target_n", f"must be >= 1, got {self.target_n}")
        check(self.target_kl > 0, "target_kl", f"must be > 0, got {self.target_kl}")
        check(
            self.reference_samples >= 2,
            "reference_samples",
            f"must be >= 2 (a calibration needs several reference rollouts per prompt), got "
            f"{self.reference_samples}",
        )


class CTRLObjective(RLOOObjective):
    """RLOO on Φ̃(C): the calibrated labeller's scores C ∈ [0, 1], transformed."""

    labeller = "calibrated"

    def __init__(self, params: CTRLParams):
        super().__init__(params)
        self.t = params.t
        if params.transform != "identity" and self.t is None:
            self.t, point = pick_t(params.transform, params.target_n, params.target_kl)
            logger.info(
                "CTRL: t = %.3g for %s-of-%d at KL %.3g (analytic %s win rate %.3f)",
                self.t,
                "best" if params.transform == "bon" else "worst",
                params.target_n,
                params.target_kl,
                params.transform,
                max(v for k, v in point.items() if k.endswith(f"of_{params.target_n}_win_rate")),
            )

    def rewards(self, scores: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        transformed = normalized_transform(scores, self.params.transform, self.t or 1.0)
        return transformed, {
            "ctrl/calibrated_mean": scores.mean(),
            "ctrl/calibrated_std": scores.std(),
            "ctrl/transformed_mean": transformed.mean(),
        }


register(
    MethodSpec(
        name="ctrl",
        params=CTRLParams,
        formats=ON_POLICY_FORMATS,
        sources=("on_policy",),
        description="InfAlign CTRL: RLOO on a reward calibrated against reference rollouts and transformed for "
        "best-/worst-of-N (Balashankar et al. 2024).",
        objective=CTRLObjective,
    )
)
