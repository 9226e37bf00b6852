"""Selfie / SPA: Kim et al., "Spread Preference Annotation: Direct Preference Judgment for Efficient LLM
Alignment" (ICLR 2025; v1 "Aligning Large Language Models with Self-generated Preference Data"),
arXiv:2406.04412, checked against the authors' code (kingdy2002/SPA).

A small labelled seed is spread to unlabelled prompts: DPO on the seed (stage 0), then for each fresh prompt
pool i = 1…T, sample two completions per prompt from π_{i−1}, label them with the implicit reward
log π_{i−1}(y|x) − log π_init(y|x) ("direct preference judgment", eq. 7), and train DPO from π_{i−1} with
reference π_{i−1} on the new pairs only, with the noise-aware refinement of §4:

* confidence z = β[(log π̃(y_w) − log π̃(y_l)) − (log π_ref(y_w) − log π_ref(y_l))], no gradient, where π̃ is
  the de-coupled noise detector (DND): logits (1 + λ)·h_θ − λ·h_ref, a model aligned with a (1 + λ)× weaker
  KL penalty; λ = 0 is the plain policy;
* c = 1[z > τ], τ the q-quantile (the authors' rule, `ConfidenceThreshold`) of the last `tau_window`
  per-pair confidences of this process, updated after each loss (a batch is judged against the window
  before it); τ = 0 until the window is full;
* L = −(1 − α + α·c)·log σ(βΔ) − (α − α·c)·log σ(−βΔ) (`losses.spa`), with α = 0 for the first
  `refinement_warmup` of the optimizer steps.

Two methods: `selfie` (alias `spa`) runs the whole procedure (`alignment.kinds.iterative`); `selfie_iteration`
is one iteration i ≥ 1 (`alignment.kinds.self_labelled`), what `selfie` writes into each `iter_i/recipe.yaml`.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Literal

import torch

from alignment.losses.spa import confidence_smoothed_dpo_loss
from alignment.methods.objective import (
    BuildContext,
    LossOutput,
    Objective,
    StepContext,
    paired_examples,
    pairwise_metrics,
)
from alignment.methods.spec import ON_POLICY_FORMATS, MethodSpec, register
from alignment.policy.logps import gather_logps, sum_per_sequence
from alignment.recipe.fields import check, param


@dataclass(frozen=True, kw_only=True)
class RefinementParams:
    """What every Selfie iteration shares: the DPO β, the judge's samples and the noise-aware refinement."""

    beta: float = param(0.1, help="DPO β, in every stage and in the confidence z. Paper: 0.1.")
    samples_per_prompt: int = param(
        2,
        help="Completions sampled per pool prompt; the judge pairs the highest and lowest scored. Paper: 2.",
    )
    refinement: bool = param(
        True, help="Noise-aware refinement: label-smooth the least confident pairs (false: plain DPO)."
    )
    alpha: float = param(0.1, help="Smoothing α on the flipped label of low-confidence pairs. Paper: 0.1.")
    refinement_warmup: float = param(
        0.2, help="Fraction of each iteration's optimizer steps before refinement starts (α = 0). Code: 0.2."
    )
    tau_quantile: float = param(
        0.1, help="τ is this quantile of the recent confidences: the share of pairs smoothed. Paper: 10 %."
    )
    tau_window: int = param(
        50, help="Confidences (one per training pair, per process) in τ's rolling window. Code: 50."
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        check(
            self.samples_per_prompt >= 2, "samples_per_prompt", f"must be >= 2, got {self.samples_per_prompt}"
        )
        check(0 <= self.alpha < 0.5, "alpha", f"must be in [0, 0.5), got {self.alpha}")
        check(
            0 <= self.refinement_warmup < 1,
            "refinement_warmup",
            f"must be in [0, 1), got {self.refinement_warmup}",
        )
        check(0 < self.tau_quantile < 1, "tau_quantile", f"must be in (0, 1), got {self.tau_quantile}")
        check(self.tau_window >= 1, "tau_window", f"must be >= 1, got {self.tau_window}")


@dataclass(frozen=True, kw_only=True)
class SelfieParams(RefinementParams):
    dnd: bool = param(
        True,
        help="De-coupled noise detection: the confidence z of the extrapolated model (1 + λ_i)·h_θ − λ_i·h_ref.",
    )
    dnd_lambdas: list[float] = param(
        help="λ_i of iteration i = 1, 2, …: one per pool at least. Paper: 1/2, 1/4, 1/8.",
        factory=lambda: [0.5, 0.25, 0.125],
    )
    judge_reference: Literal["initial", "previous"] = param(
        "initial",
        help="Reference of the judge log π_{i−1} − log π_ref: initial = π_init (the paper's and its code's); "
        "previous = π_{i−2}, the reference π_{i−1} was trained against (π_init for iteration 1); the "
        "paper's ablation.",
    )
    seed_num_train_epochs: float = param(
        3,
        help="Epochs of the stage-0 DPO on the seed (the iterations use training.num_train_epochs). Code: 3.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, lam in enumerate(self.dnd_lambdas):
            check(lam >= 0, f"dnd_lambdas[{i}]", f"must be >= 0, got {lam}")
        check(
            self.seed_num_train_epochs > 0,
            "seed_num_train_epochs",
            f"must be > 0, got {self.seed_num_train_epochs}",
        )


@dataclass(frozen=True, kw_only=True)
class SelfieIterationParams(RefinementParams):
    judge_reference: str = param(
        help="The judge's reference model π_ref in log π − log π_ref (π_init in the paper): an alias, a "
        "directory or a hub id. The judge's policy is the model trained from (model.name_or_path)."
    )
    dnd_lambda: float = param(
        0.0, help="λ of the de-coupled noise detector (1 + λ)·h_θ − λ·h_ref for the confidence; 0: off."
    )
    iteration: int = param(1, help="Which iteration this is (for logs and summaries).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.judge_reference), "judge_reference", "must name a model")
        check(self.dnd_lambda >= 0, "dnd_lambda", f"must be >= 0, got {self.dnd_lambda}")
        check(self.iteration >= 1, "iteration", f"must be >= 1, got {self.iteration}")


def iteration_params(params: SelfieParams, iteration: int, judge_reference: str) -> SelfieIterationParams:
    """The `selfie_iteration` parameters of iteration `iteration` (1-based) of a `selfie` run."""
    shared = {f.name: getattr(params, f.name) for f in dataclasses.fields(RefinementParams)}
    lam = params.dnd_lambdas[iteration - 1] if params.dnd else 0.0
    return SelfieIterationParams(
        **shared, judge_reference=judge_reference, dnd_lambda=lam, iteration=iteration
    )


class ConfidenceThreshold:
    """τ over the last `window` confidences seen in training, 0 until the window is full, by the authors' rule:
    the mean of the values at 0-based positions ⌊q·n⌋ and ⌊q·n⌋ + 1 of the sorted window (q = 0.1, n = 50:
    the 6th and 7th smallest).

    The authors' code keeps one margin per micro-batch of one pair per device, so its window is the last 50
    pairs. With larger micro-batches this keeps every pair's confidence rather than batch means (spec
    pitfall 3: the window's definition changes with the batch): per pair, the share of pairs below τ stays
    the paper's K % = q whatever the batch size, which a window of batch means would not give.
    """

    def __init__(self, quantile: float, window: int):
        self.quantile = quantile
        self.values: deque[float] = deque(maxlen=window)

    @property
    def tau(self) -> float:
        n = len(self.values)
        if n < (self.values.maxlen or 0):
            return 0.0
        ordered = sorted(self.values)
        k = min(int(self.quantile * n), n - 1)
        return 0.5 * (ordered[k] + ordered[min(k + 1, n - 1)])

    def update(self, confidences: torch.Tensor) -> None:
        self.values.extend(confidences.detach().double().cpu().tolist())


class SelfieObjective(Objective):
    """DPO with confidence-based label smoothing (SPA §4, the code's `loss_type="distill"`).

    Completions (chosen, rejected) of the self-labelled pairs; the reference is π_{i−1}, the model the
    iteration starts from. With DND the trainer hands over both models' logits at the completion tokens.
    """

    num_completions = 2

    def __init__(self, params: RefinementParams):
        super().__init__(params)
        self.dnd_lambda = float(getattr(params, "dnd_lambda", 0.0))
        self.needs_token_logits = self.needs_live_reference(params)
        self.threshold = ConfidenceThreshold(params.tau_quantile, params.tau_window)

    @classmethod
    def needs_live_reference(cls, params) -> bool:
        """DND reads the reference's logits (the extrapolated model); without refinement nothing reads z."""
        return bool(params.refinement and getattr(params, "dnd_lambda", 0.0) > 0)

    def build_examples(self, dataset, ctx: BuildContext):
        return paired_examples(dataset, self)

    def confidence(
        self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, ctx: StepContext
    ) -> torch.Tensor:
        """(B,) z of every pair under the noise detector, without gradient."""
        with torch.no_grad():
            detector = policy_logps.detach()
            if self.needs_token_logits:
                lam = self.dnd_lambda
                h, h_ref = ctx.policy_token_logits.detach().float(), ctx.reference_token_logits.float()
                mixed = (1 + lam) * h - lam * h_ref  # at float32 at least: bf16 logits would round z
                sequences = ctx.batch["sequences"]
                detector = sum_per_sequence(gather_logps(mixed, sequences.target_ids), sequences)
            return self.params.beta * (
                (detector[:, 0] - detector[:, 1]) - (ref_logps[:, 0] - ref_logps[:, 1])
            )

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        p = self.params
        z = self.confidence(policy_logps, ref_logps, ctx)
        tau = self.threshold.tau
        confident = z > tau
        smoothing = p.refinement and ctx.progress >= p.refinement_warmup
        out = confidence_smoothed_dpo_loss(
            policy_logps[:, 0],
            policy_logps[:, 1],
            ref_logps[:, 0],
            ref_logps[:, 1],
            confident,
            beta=p.beta,
            alpha=p.alpha if smoothing else 0.0,
        )
        if ctx.training:
            self.threshold.update(z)  # after the loss: this batch was judged against the window before it
        metrics = pairwise_metrics(out.chosen_rewards, out.rejected_rewards, policy_logps)
        metrics["selfie/confidence"] = z.float().mean()
        metrics["selfie/tau"] = torch.tensor(tau, device=z.device)
        metrics["selfie/smoothed"] = (~confident).float().mean() * float(smoothing)
        return LossOutput(out.losses.mean(), metrics)

    def state_dict(self) -> dict:
        """τ's window, so a resumed iteration judges its next batch as the uninterrupted one would (exact on one
        process; under several, every process resumes with the saving process's window)."""
        return {"confidences": list(self.threshold.values)}

    def load_state_dict(self, state: dict) -> None:
        self.threshold.values.clear()
        self.threshold.values.extend(state["confidences"])


SELFIE = MethodSpec(
    name="selfie",
    params=SelfieParams,
    formats=("paired",),
    kind="iterative",
    description="Selfie/SPA: DPO on a labelled seed, then self-labelled DPO iterations on prompt pools "
    "(Kim et al. 2024).",
)
register(SELFIE)
register(dataclasses.replace(SELFIE, name="spa", description="Alias of selfie (SPA, the paper's ICLR name)."))
register(
    MethodSpec(
        name="selfie_iteration",
        params=SelfieIterationParams,
        formats=ON_POLICY_FORMATS,
        kind="self_labelled",
        objective=SelfieObjective,
        description="One Selfie iteration: self-label pool prompts with the model's implicit reward, then "
        "refined DPO.",
    )
)
