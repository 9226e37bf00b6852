"""Bradley–Terry reward-model loss (Ouyang et al. 2022, "Training language models to follow instructions
with human feedback", arXiv:2203.02155, eq. 1; Bradley & Terry 1952).

Shapes: B = number of preference pairs; ``chosen_rewards`` / ``rejected_rewards`` are the reward model's
scalar scores r(x, y_w), r(x, y_l), each ``(B,)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["bradley_terry_loss"]


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, *, center_rewards_coefficient: float = 0.0
) -> Tensor:
    """Per-pair loss, shape ``(B,)``: −log σ(r_w − r_l) + c·(r_w + r_l)².

    The first term is the negative log-likelihood of the label under the Bradley–Terry model
    P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)) (InstructGPT eq. 1). The optional second term is
    Eisenstein et al. 2023 (arXiv:2312.09244, §3) "reward centering", as TRL's
    `center_rewards_coefficient`: BT is invariant to a shift of all rewards, so this pins their mean near 0.
    Averaged over pairs it equals TRL's `coef * mean((r_w + r_l) ** 2)`.
    """
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    if center_rewards_coefficient:
        losses = losses + center_rewards_coefficient * (chosen_rewards + rejected_rewards) ** 2
    return losses
