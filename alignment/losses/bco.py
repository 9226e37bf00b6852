"""BCO loss (Jung et al., arXiv:2404.04656; v2 eq. 8, v1 eq. 11), its reward shift δ and UDM weights.

Shapes: B = number of unpaired examples; ``policy_logps``/``ref_logps`` summed completion log-probs ``(B,)``;
``labels`` ``(B,)`` bool (True = desirable / thumbs-up); embeddings ``(N, D)``.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "BCOLossOutput",
    "DensityRatioClassifier",
    "RewardShift",
    "bco_loss",
    "density_ratio_weights",
    "fit_density_ratio_classifier",
]


class BCOLossOutput(NamedTuple):
    """Per-example loss ``(B,)`` and detached implicit rewards r = β·ρ ``(B,)`` (feed these to ``RewardShift``)."""

    losses: Tensor
    rewards: Tensor


def bco_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    labels: Tensor,
    delta: Tensor | float,
    *,
    beta: float,
    udm_weights: Tensor | None = None,
) -> BCOLossOutput:
    """Per-example BCE with reward shift (BCO v2 eq. 8), ``(B,)``:

        desirable:    −log σ(r − δ)
        undesirable:  w(x) · −log σ(−(r − δ))

    r = β·(log π_θ − log π_ref); δ is a constant (detached here). ``udm_weights`` ``(B,)`` are the UDM
    density-ratio weights w(x) (v1 §4.3); they apply to undesirable examples only, entries at desirable
    positions are ignored. The trainer takes the plain mean (not divided by the sum of weights), as the
    reference code does.
    """
    labels = labels.to(torch.bool)
    rewards = beta * (policy_logps - ref_logps)
    shifted = rewards - torch.as_tensor(delta, dtype=rewards.dtype, device=rewards.device).detach()
    losses = -F.logsigmoid(torch.where(labels, shifted, -shifted))
    if udm_weights is not None:
        losses = torch.where(labels, losses, udm_weights.to(losses.dtype) * losses)
    return BCOLossOutput(losses, rewards.detach())


class RewardShift:
    """Running estimate of BCO's reward shift δ (v2 §4.2: δ = ½(E_{D+}[r] + E_{D−}[r])).

    Modes:
    - ``"class_balanced"`` (default): running mean of desirable rewards and of undesirable rewards,
      δ = ½(mean₊ + mean₋); with only one class seen so far δ is that class's mean; with none, 0.
    - ``"pooled"``: one running mean of all per-example rewards, starting at mean 0 with count 1e-24, the
      reference code's (TRL ``RunningMoments``) behaviour. Under class imbalance it drifts to the majority.

    ``decay=None`` keeps cumulative count-weighted means (the reference code); ``decay=d`` keeps an EMA
    per step, mean ← d·mean + (1−d)·batch_mean (the first batch initialises it).
    Call ``update`` BEFORE computing the loss (δ includes the current batch); in evaluation simply do not
    call it. In data-parallel runs all-reduce the four sums and use ``update_from_sums``.
    """

    _INITIAL_POOLED_COUNT = 1e-24

    def __init__(self, mode: Literal["class_balanced", "pooled"] = "class_balanced", decay: float | None = None):
        if mode not in ("class_balanced", "pooled"):
            raise ValueError(f"mode must be 'class_balanced' or 'pooled', got {mode!r}")
        if decay is not None and not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1) or None, got {decay}")
        self.mode = mode
        self.decay = decay
        init = self._INITIAL_POOLED_COUNT if mode == "pooled" else 0.0
        self._stats: dict[str, dict[str, float]] = (
            {"pooled": {"mean": 0.0, "count": init}}
            if mode == "pooled"
            else {"desirable": {"mean": 0.0, "count": 0.0}, "undesirable": {"mean": 0.0, "count": 0.0}}
        )

    @property
    def delta(self) -> float:
        """Current δ (a Python float; constant w.r.t. autograd)."""
        if self.mode == "pooled":
            return self._stats["pooled"]["mean"]
        seen = [s["mean"] for s in self._stats.values() if s["count"] > 0]
        return sum(seen) / len(seen) if seen else 0.0

    def update(self, rewards: Tensor, labels: Tensor) -> float:
        """Fold one batch of rewards ``(B,)`` (β already applied) with labels ``(B,)`` bool; returns the new δ."""
        rewards = rewards.detach().to(torch.float64)
        labels = labels.to(torch.bool)
        pos, neg = rewards[labels], rewards[~labels]
        return self.update_from_sums(pos.sum().item(), pos.numel(), neg.sum().item(), neg.numel())

    def update_from_sums(
        self, desirable_sum: float, desirable_count: float, undesirable_sum: float, undesirable_count: float
    ) -> float:
        """Same as ``update`` from (all-reduced) per-class sums and counts; returns the new δ."""
        if self.mode == "pooled":
            self._fold("pooled", desirable_sum + undesirable_sum, desirable_count + undesirable_count)
        else:
            self._fold("desirable", desirable_sum, desirable_count)
            self._fold("undesirable", undesirable_sum, undesirable_count)
        return self.delta

    def _fold(self, key: str, batch_sum: float, batch_count: float) -> None:
        if batch_count <= 0:
            return
        stats, batch_mean = self._stats[key], float(batch_sum) / float(batch_count)
        if self.decay is None or stats["count"] <= self._INITIAL_POOLED_COUNT:
            total = stats["count"] + batch_count  # count-weighted (Chan et al.) mean update
            stats["mean"] += (batch_mean - stats["mean"]) * batch_count / total
        else:
            stats["mean"] = self.decay * stats["mean"] + (1.0 - self.decay) * batch_mean
        stats["count"] += float(batch_count)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats and strings only); save it with every checkpoint."""
        return {"mode": self.mode, "decay": self.decay, "stats": {k: dict(v) for k, v in self._stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.mode or state["decay"] != self.decay:
            raise ValueError(
                f"checkpoint RewardShift(mode={state['mode']!r}, decay={state['decay']}) does not match "
                f"RewardShift(mode={self.mode!r}, decay={self.decay})"
            )
        self._stats = {k: {"mean": float(v["mean"]), "count": float(v["count"])} for k, v in state["stats"].items()}


def density_ratio_weights(prob_desirable: Tensor, *, min_ratio: float = 0.5, max_ratio: float = 10.0) -> Tensor:
    """UDM weight w(x) = clamp(p / (1 − p + 1e-8), min_ratio, max_ratio), same shape as ``prob_desirable``.

    p = P(desirable | prompt) from a class-balanced classifier, so p/(1−p) estimates p₊(x)/p₋(x) (BCO v1 §4.3).
    """
    return (prob_desirable / (1 - prob_desirable + 1e-8)).clamp(min=min_ratio, max=max_ratio)


class DensityRatioClassifier:
    """A fitted logistic regression on prompt embeddings; label 1 = desirable. Fit once, never updated."""

    def __init__(self, model: Any):
        self.model = model

    def prob_desirable(self, embeddings: Any) -> Tensor:
        """P(desirable | embedding), ``(N,)`` float64, for embeddings ``(N, D)`` (numpy array or tensor)."""
        proba = self.model.predict_proba(_to_numpy(embeddings))
        column = list(self.model.classes_).index(1)
        return torch.from_numpy(proba[:, column].copy())

    def weights(self, embeddings: Any, *, min_ratio: float = 0.5, max_ratio: float = 10.0) -> Tensor:
        """UDM weights ``(N,)`` for undesirable examples' prompt embeddings."""
        return density_ratio_weights(self.prob_desirable(embeddings), min_ratio=min_ratio, max_ratio=max_ratio)


def fit_density_ratio_classifier(
    desirable_embeddings: Any, undesirable_embeddings: Any, seed: int
) -> DensityRatioClassifier:
    """Fit LogisticRegression(class_weight="balanced") on prompt embeddings ``(N₊, D)`` and ``(N₋, D)``.

    Balanced class weights remove the class prior, so p/(1−p) estimates the prompt density ratio rather than
    the posterior odds (BCO spec §3 step 3, pitfall 5). sklearn is imported here, not at module import.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    pos, neg = _to_numpy(desirable_embeddings), _to_numpy(undesirable_embeddings)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("the density-ratio classifier needs both desirable and undesirable prompts")
    features = np.concatenate([pos, neg], axis=0)
    targets = np.concatenate([np.ones(len(pos), dtype=np.int64), np.zeros(len(neg), dtype=np.int64)])
    model = LogisticRegression(class_weight="balanced", random_state=seed, max_iter=1000)
    model.fit(features, targets)
    return DensityRatioClassifier(model)


def _to_numpy(embeddings: Any) -> Any:
    if isinstance(embeddings, Tensor):
        return embeddings.detach().cpu().to(torch.float64).numpy()
    import numpy as np

    return np.asarray(embeddings, dtype=np.float64)
