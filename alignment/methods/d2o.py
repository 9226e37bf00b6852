"""D²O: Duan et al. 2024, "Negating Negatives: Alignment ... via Distributional Dispreference Optimization",
arXiv:2403.03419 (Eq. 3).

-log σ((β/K)·Σᵢ log π(yᵢ|x)/πref(yᵢ|x) − α·log π(y_l|x)/πref(y_l|x)) with K self-samples yᵢ ~ πref and a
human negative y_l; paired/unpaired data contribute their rejected/undesirable completions as negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

from alignment.losses.d2o import d2o_loss
from alignment.methods.objective import BuildContext, LossOutput, Objective, StepContext
from alignment.methods.spec import MethodSpec, register
from alignment.policy.batching import COMPLETIONS
from alignment.recipe.fields import check, param
from alignment.sampling.factory import sampling_params_from_config


@dataclass(frozen=True, kw_only=True)
class D2OParams:
    beta: float = param(0.1, help="β on the averaged self-sample log-ratios. Paper: 0.1.")
    alpha: float = param(0.1, help="α on the negative's log-ratio (not multiplied by β). Paper: 0.1.")
    num_samples: int = param(11, help="K, self-samples drawn from the reference per prompt. Paper: 11.")

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")


class D2OObjective(Objective):
    """D²O (Duan et al. 2024, eq. 3): negatives only, K self-samples from the reference as anchors.

    The K samples per prompt are drawn once, before training, from the initial policy (= the reference,
    π_r⁺ = π_r⁻ = π_r as in the paper) through the configured `Sampler`, so the first term really estimates
    the forward KL the regulariser needs (spec pitfall 4). Completions: (y₁ … y_K, y_l).
    """

    def __init__(self, params):
        super().__init__(params)
        self.num_completions = params.num_samples + 1

    def build_examples(self, dataset, ctx: BuildContext):
        prompts = sorted(set(dataset["prompt"]))
        sampler = ctx.sampler_factory()
        params = sampling_params_from_config(ctx.sampling_config, n=self.params.num_samples)
        samples = sampler.generate(prompts, params)
        by_prompt = {
            p: [ids or [ctx.tokenizer.eos_token_id] for ids in ids_list]
            for p, ids_list in zip(prompts, samples.token_ids, strict=True)
        }

        def attach(row):
            return {COMPLETIONS: by_prompt[row["prompt"]] + [row["rejected_input_ids"]]}

        return self.keep_columns(dataset.map(attach, desc="D²O: attaching reference samples"))

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        k = self.params.num_samples
        out = d2o_loss(
            policy_logps[:, :k],
            ref_logps[:, :k],
            policy_logps[:, k],
            ref_logps[:, k],
            beta=self.params.beta,
            alpha=self.params.alpha,
        )
        metrics = {
            "rewards/samples": out.sample_rewards.mean(),
            "rewards/rejected": out.rejected_rewards.mean(),
            "rewards/margins": out.margins.mean(),
            "rewards/accuracies": (out.margins > 0).float().mean(),
            "logps/samples": policy_logps[:, :k].detach().mean(),
            "logps/rejected": policy_logps[:, k].detach().mean(),
        }
        return LossOutput(out.losses.mean(), metrics)


register(
    MethodSpec(
        name="d2o",
        params=D2OParams,
        formats=("negatives", "paired", "unpaired"),
        description="Distributional Dispreference Optimization: negatives vs K self-samples "
        "(Duan et al. 2024).",
        objective=D2OObjective,
    )
)
