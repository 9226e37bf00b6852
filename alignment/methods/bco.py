"""BCO: Jung et al., "Binary Classifier Optimization for Large Language Model Alignment", arXiv:2404.04656.

Binary cross-entropy on the implicit reward r = β(logπ − logπref) shifted by δ, the mean of the two class
means (v2 Eq. 8); optional Underlying Distribution Matching (v1) reweights undesirable examples by a prompt
density ratio p₊(x)/p₋(x) from a logistic regression on prompt embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from alignment.embedders import embed_prompts
from alignment.losses.bco import (
    DensityRatioClassifier,
    RewardShift,
    bco_loss,
    fit_density_ratio_classifier,
)
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
class BCOParams:
    beta: float = param(0.1, help="β in the implicit reward r = β·(logπ − logπref). Paper: 0.1.")
    delta: Literal["class_balanced", "pooled"] = param(
        "class_balanced",
        help="Reward shift δ: class_balanced = ½(mean₊ + mean₋) of running per-class means (the paper's "
        "optimum); pooled = running mean over all rewards (TRL's BCOTrainer).",
    )
    delta_ema_decay: float | None = param(
        None, help="Decay in (0, 1) for exponential running means of δ; None = cumulative mean (TRL)."
    )
    udm: bool = param(
        False, help="Underlying Distribution Matching: density-ratio weights on undesirable examples."
    )
    udm_embedder: Literal["auto", "minilm", "policy"] = param(
        "auto",
        help="Prompt embedder for UDM: minilm (sentence-embedding package), policy (mean hidden states), "
        "auto = minilm when installed else policy.",
    )
    udm_prompt_sample_size: int = param(1024, help="Prompts sampled per class to fit the UDM classifier.")
    min_density_ratio: float = param(0.5, help="Lower clamp of the UDM weight p/(1−p).")
    max_density_ratio: float = param(10.0, help="Upper clamp of the UDM weight p/(1−p).")

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        d = self.delta_ema_decay
        check(
            d is None or 0 < d < 1, "delta_ema_decay", f"must be in (0, 1) or null (cumulative mean), got {d}"
        )
        check(
            self.udm_prompt_sample_size >= 2,
            "udm_prompt_sample_size",
            f"must be >= 2, got {self.udm_prompt_sample_size}",
        )
        check(self.min_density_ratio > 0, "min_density_ratio", f"must be > 0, got {self.min_density_ratio}")
        check(
            self.min_density_ratio < self.max_density_ratio,
            "max_density_ratio",
            f"must be > min_density_ratio ({self.min_density_ratio}), got {self.max_density_ratio}",
        )


class BCOObjective(Objective):
    """BCO (Jung et al. 2024/2025): BCE on β·ρ shifted by δ, with optional distribution matching (UDM).

    δ = ½(mean₊ + mean₋) of the implicit rewards, from class-balanced running means updated before each
    training loss (so δ includes the current batch, as in the reference code) and never in evaluation;
    `delta: pooled` reproduces the reference code's pooled cumulative mean. UDM: a balanced logistic
    regression on prompt embeddings, fitted once on `udm_prompt_sample_size` training prompts per class,
    gives w(x) = clamp(p/(1−p), min_density_ratio, max_density_ratio) on thumbs-down examples (v1 §4.3).
    """

    num_completions = 1
    example_columns = ("label", "udm_weight")

    def __init__(self, params):
        super().__init__(params)
        self.shift = RewardShift(mode=params.delta, decay=params.delta_ema_decay)
        self.embedder_used: str | None = None
        self.udm_classifier: DensityRatioClassifier | None = None

    @property
    def delta(self) -> float:
        return self.shift.delta

    def build_examples(self, dataset, ctx: BuildContext):
        """Rows -> (y,) completions with `label` and `udm_weight` (1 everywhere without UDM).

        The run builds the training set first: with UDM its prompts fit the classifier, and every dataset
        built later (the eval set) is weighted by that same classifier (see `udm_weights`).
        """
        dataset = unpaired_examples(dataset, with_mismatched=False, seed=ctx.seed, max_length=ctx.max_length)
        weights = self.udm_weights(dataset, ctx) if self.params.udm else [1.0] * len(dataset)
        return self.keep_columns(dataset.add_column("udm_weight", weights))

    def udm_weights(self, dataset, ctx: BuildContext) -> list[float]:
        """w(x) for every thumbs-down example, 1 for desirable ones.

        The weights correct the *training* data's prompt shift p₊(x)/p₋(x), so the classifier is fitted once,
        on the first dataset built (the training set), and reused with the same embedder for every later one:
        eval losses then weigh examples exactly as training does, and an eval set with one class or a handful
        of prompts needs no classifier of its own.
        """
        prompts, labels = dataset["prompt"], np.asarray(dataset["label"], dtype=bool)
        unique = sorted(set(prompts))
        embeddings, self.embedder_used = embed_prompts(
            unique,
            kind=self.embedder_used or self.params.udm_embedder,
            policy=ctx.model,
            tokenizer=ctx.tokenizer,
        )
        row_of = {p: i for i, p in enumerate(unique)}
        rows = np.asarray([row_of[p] for p in prompts])
        if self.udm_classifier is None:
            self.udm_classifier = self.fit_udm_classifier(embeddings, rows, labels, seed=ctx.seed)
        weights = self.udm_classifier.weights(
            embeddings[rows], min_ratio=self.params.min_density_ratio, max_ratio=self.params.max_density_ratio
        ).numpy()
        return np.where(labels, 1.0, weights).tolist()

    def fit_udm_classifier(
        self, embeddings: np.ndarray, rows: np.ndarray, labels: np.ndarray, *, seed: int
    ) -> DensityRatioClassifier:
        """Balanced logistic regression on `udm_prompt_sample_size` prompts per class, drawn with replacement
        (as the reference code does); `rows` (N,) index each example's prompt in `embeddings`."""
        rng = np.random.default_rng(seed)
        size = self.params.udm_prompt_sample_size
        pos = rng.choice(rows[labels], size=size, replace=True)
        neg = rng.choice(rows[~labels], size=size, replace=True)
        return fit_density_ratio_classifier(embeddings[pos], embeddings[neg], seed=seed)

    def loss(self, policy_logps, ref_logps, ctx: StepContext) -> LossOutput:
        labels = ctx.batch["label"].bool()
        rewards = (self.params.beta * (policy_logps[:, 0] - ref_logps[:, 0])).detach().double()
        if ctx.training:
            sums = ctx.all_reduce_sum(
                torch.stack(
                    [
                        rewards[labels].sum(),
                        labels.sum().double(),
                        rewards[~labels].sum(),
                        (~labels).sum().double(),
                    ]
                )
            )
            self.shift.update_from_sums(*sums.tolist())
        weights = ctx.batch["udm_weight"].to(policy_logps.dtype) if self.params.udm else None
        out = bco_loss(
            policy_logps[:, 0],
            ref_logps[:, 0],
            labels,
            self.shift.delta,
            beta=self.params.beta,
            udm_weights=weights,
        )
        metrics = unpaired_metrics(out.rewards, labels, policy_logps[:, 0])
        metrics["delta"] = torch.tensor(self.shift.delta, device=out.losses.device)  # stacked with the others
        return LossOutput(out.losses.mean(), metrics)

    def state_dict(self) -> dict:
        return {"reward_shift": self.shift.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.shift.load_state_dict(state["reward_shift"])


register(
    MethodSpec(
        name="bco",
        params=BCOParams,
        formats=("unpaired", "paired"),
        description="Binary Classifier Optimization: BCE with reward shift, optional UDM (Jung et al. 2024).",
        objective=BCOObjective,
    )
)
