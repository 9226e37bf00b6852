"""Reward model: a one-logit sequence classifier trained on paired data with the Bradley–Terry loss
(Ouyang et al. 2022, arXiv:2203.02155, eq. 1; alignment.losses.reward.bradley_terry_loss).

The trainer is `alignment.trainers.reward_model` (`kind="reward_model"`): no policy, no reference model.
Text scored per completion is prompt + completion + EOS, right-padded, exactly as `RewardModelScorer`
scores it, so the saved model can be used as `reward: {kind: model, name_or_path: <output_dir>}`.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignment.methods.spec import MethodSpec, register
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class RewardModelParams:
    center_rewards_coefficient: float | None = param(
        None,
        help="Weight c of the reward-centering term c·(r_chosen + r_rejected)² (Eisenstein et al. 2023; "
        "TRL's center_rewards_coefficient, which suggests 0.01); null: off.",
    )

    max_group_size: int = param(
        8,
        help="Most distinct completions in one comparison group: consecutive pairs with the same prompt are "
        "scored together as one batch element, each completion once (InstructGPT's K ranked completions, "
        "K = 4..9 there). 2 = one pair per group, as TRL's RewardTrainer.",
    )

    def __post_init__(self) -> None:
        c = self.center_rewards_coefficient
        check(c is None or c >= 0, "center_rewards_coefficient", f"must be >= 0 or null, got {c}")
        k = self.max_group_size
        check(k >= 2, "max_group_size", f"must be >= 2 (a pair has two completions), got {k}")


register(
    MethodSpec(
        name="reward_model",
        params=RewardModelParams,
        formats=("paired",),
        kind="reward_model",
        description="Bradley-Terry reward model (one-logit classifier) on chosen/rejected pairs.",
    )
)
