"""RLOO: REINFORCE with a leave-one-out baseline and a KL penalty (Ahmadian et al. 2024, "Back to Basics:
Revisiting REINFORCE Style Optimization for Learning from Human Feedback in LLMs", arXiv:2402.14740).

The "standard RLHF" arm of InfAlign/CTRL (arXiv:2412.19792): maximise E_{y~π}[r(x, y)] − β·KL(π‖π_ref). The
paper's Algorithm 1 uses PPO; this library uses RLOO, a critic-free estimator of the same objective's
gradient: no value model to train and hold (half the memory of PPO's actor + critic), one forward/backward
per sample, and Ahmadian et al. find it matches or beats PPO for RLHF. The objective, not the optimiser, is
what the paper's claims are about.

Each step samples k = `sampling.n` completions per prompt from the current policy (the `all` selector keeps
every one) and the loss is, per prompt,

    r̃_j = r_j − β·(log π(y_j|x) − log π_ref(y_j|x))      (the KL as a per-sequence reward penalty, detached)
    A_j = r̃_j − (1/(k−1))·Σ_{i≠j} r̃_i                      (leave-one-out baseline)
    L = −(1/k)·Σ_j A_j · log π(y_j|x)                        (summed over completion tokens)

The KL enters as a reward penalty, not a loss term: E_π[(r − β·log π/π_ref)·∇log π] is exactly the gradient
of E_π[r] − β·KL(π‖π_ref) (the remaining term, β·E_π[∇log π], is zero), so the penalty makes REINFORCE
unbiased for the KL-regularised objective, and the baseline then also centres the penalty. A separate loss
term β·KL(π‖π_ref) would need the exact per-token KL over the vocabulary in every step; the penalty needs
only the log-probs the step computes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.experience.samples import SCORES
from alignment.methods.objective import BuildContext, LossOutput, Objective, StepContext
from alignment.methods.spec import ON_POLICY_FORMATS, MethodSpec, register
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class RLOOParams:
    beta: float = param(
        0.05, help="KL coefficient β in E[r] − β·KL(π‖π_ref), applied as a per-sequence reward penalty."
    )

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")


def leave_one_out_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(B, k) rewards -> (B, k) r_j − mean of the other k − 1 rewards of the same prompt."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError(f"a leave-one-out baseline needs k >= 2 samples per prompt, got {k}")
    return rewards - (rewards.sum(dim=1, keepdim=True) - rewards) / (k - 1)


class RLOOObjective(Objective):
    """REINFORCE with a leave-one-out baseline on the KL-penalised reward of k policy samples per prompt.

    `num_completions` is k: the run sets it from `sampling.n` (the `all` selector keeps every sample)."""

    labeller = "reward"
    selector = "all"

    def build_examples(self, dataset, ctx: BuildContext):
        raise TypeError(f"{type(self).__name__} trains on on-policy samples only (data.source: on_policy)")

    def rewards(self, scores: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, k) labeller scores -> the rewards the policy maximises (the raw reward here) and their metrics."""
        del ctx
        return scores, {}

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        scores = ctx.batch[SCORES].to(policy_logps.device, torch.float64)
        rewards, metrics = self.rewards(scores, ctx)
        log_ratio = (policy_logps - ref_logps).detach().double()
        penalty = self.params.beta * log_ratio
        penalised = rewards - penalty
        advantages = leave_one_out_advantages(penalised)
        loss = -(advantages.to(policy_logps.dtype) * policy_logps).mean()
        metrics.update(
            {
                "rloo/reward": rewards.mean(),
                "rloo/kl_penalty": penalty.mean(),
                "rloo/log_ratio": log_ratio.mean(),
                "rloo/penalised_reward": penalised.mean(),
                "rloo/baseline": (penalised - advantages).mean(),
                "rloo/advantage_std": advantages.std(),
                "logps/samples": policy_logps.detach().mean(),
            }
        )
        return LossOutput(loss, {k: v.detach().float() for k, v in metrics.items()})


register(
    MethodSpec(
        name="rloo",
        params=RLOOParams,
        formats=ON_POLICY_FORMATS,
        sources=("on_policy",),
        description="RLOO: REINFORCE with a leave-one-out baseline on k policy samples, KL-penalised reward "
        "(the standard-RLHF arm of InfAlign).",
        objective=RLOOObjective,
    )
)
