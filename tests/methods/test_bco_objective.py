"""BCOObjective's distribution matching (bco.md §3): the density-ratio weights against a hand-solved logistic
regression, and one classifier, fitted on the training prompts, weighting every dataset built after them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from objective_testing import unpaired_context

from alignment.methods.bco import BCOObjective, BCOParams
from alignment.methods.objective import BuildContext

# 1-D prompt embeddings: the thumbs-up prompts at +A, the thumbs-down one at −A
A = 0.5
EMBEDDING = {"up one": A, "up two": A, "down": -A, "eval up": -1.0, "eval far": 1.0}
TRAIN = [("up one", True), ("up two", True), ("down", False), ("down", False)]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def fitted_slope(n: int) -> float:
    """The balanced, L2 (C = 1) logistic regression on n copies of +A (label 1) and n of −A (label 0).

    Balanced class weights are 2n/(2·n) = 1 and the data are symmetric, so the intercept is 0 and the slope w
    minimises ½w² + 2n·log(1 + e^(−wA)): w = 2nA·σ(−wA), solved here by bisection (the left side grows, the
    right side falls in w).
    """
    low, high = 0.0, 2 * n * A
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if mid < 2 * n * A * sigmoid(-mid * A) else (low, mid)
    return low


def udm_weight(x: float, w: float, *, low: float = 0.5, high: float = 10.0) -> float:
    """clamp(p/(1 − p + 1e-8), low, high) with p = σ(w·x) = P(desirable | prompt at x)."""
    p = sigmoid(w * x)
    return min(max(p / (1 - p + 1e-8), low), high)


@pytest.fixture(autouse=True)
def fixed_embeddings(monkeypatch):
    """Prompt embeddings from the table above instead of a model."""

    def embed(prompts, *, kind, policy, tokenizer):
        return np.array([[EMBEDDING[p]] for p in prompts]), "table"

    monkeypatch.setattr("alignment.methods.bco.embed_prompts", embed)


def unpaired(rows: list[tuple[str, bool]]) -> Dataset:
    return Dataset.from_dict(
        {
            "prompt": [p for p, _ in rows],
            "prompt_input_ids": [[1]] * len(rows),
            "completion_input_ids": [[2]] * len(rows),
            "label": [label for _, label in rows],
        }
    )


def built_weights(objective: BCOObjective, rows: list[tuple[str, bool]]) -> list[float]:
    context = BuildContext(tokenizer=None, model=None, seed=0, max_length=64)
    return objective.build_examples(unpaired(rows), context)["udm_weight"]


@pytest.mark.parametrize(
    "sample_size, down_weight",
    [
        (2, 0.669611),  # w = 0.80212: p = σ(−0.40106) = 0.40106, p/(1 − p) = 0.66961
        (8, 0.5),  # w = 2.08519: p/(1 − p) = 0.35254, clamped up to min_density_ratio
    ],
)
def test_udm_weights_match_the_hand_solved_classifier(sample_size, down_weight):
    """Thumbs-up rows get 1; thumbs-down rows get the clamped density ratio of the classifier fitted on
    `udm_prompt_sample_size` draws per class (more draws weaken the L2 penalty, so w grows with n)."""
    w = fitted_slope(sample_size)
    assert udm_weight(-A, w) == pytest.approx(down_weight, abs=1e-6)
    objective = BCOObjective(BCOParams(udm=True, udm_prompt_sample_size=sample_size))
    got = built_weights(objective, TRAIN)
    assert got == pytest.approx([1.0, 1.0, down_weight, down_weight], abs=1e-5)


def test_eval_examples_are_weighted_by_the_training_classifier():
    """The eval set's own prompts (a thumbs-up one at −1, where training saw only thumbs-down, and a thumbs-down
    one at +1) would fit a classifier pointing the other way; the training one (slope 0.80212) weighs the
    thumbs-down prompts 0.66961 at −0.5 and e^0.80212 = 2.23026 at +1."""
    objective = BCOObjective(BCOParams(udm=True, udm_prompt_sample_size=2))
    built_weights(objective, TRAIN)
    classifier = objective.udm_classifier
    got = built_weights(objective, [("eval up", True), ("down", False), ("eval far", False)])
    w = fitted_slope(2)
    assert got == pytest.approx([1.0, udm_weight(-A, w), udm_weight(1.0, w)], abs=1e-5)
    assert udm_weight(1.0, w) == pytest.approx(2.23026, abs=1e-5)
    assert objective.udm_classifier is classifier


def test_every_metric_is_on_the_loss_device():
    """The trainer stacks the metrics: `delta` made on the default device instead of the data's crashed the
    first step of a GPU run (data on cuda, default device cpu). Here the data stay on the CPU and the default
    device is `meta`, the same mismatch the other way round."""
    objective = BCOObjective(BCOParams(beta=0.5))
    policy = torch.tensor([[-3.0], [-4.0], [-2.5], [-5.0]])
    context = unpaired_context([True, False, True, False], udm_weight=[1.0] * 4)
    with torch.device("meta"):
        out = objective.loss(policy, policy + 0.5, context)
    assert objective.delta == pytest.approx(-0.25)
    assert {m.device for m in out.metrics.values()} == {out.loss.device}
    assert torch.stack([m.float().reshape(()) for m in out.metrics.values()]).shape == (len(out.metrics),)
