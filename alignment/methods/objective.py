"""The runtime side of a method: which completions each example carries, and how log-probs become a loss.

A method is small: a params dataclass, the data formats it takes, and an `Objective` subclass with two
jobs — `build_examples` (tokenized rows -> rows with a `completion_ids` list of C completions, plus any
per-example numbers such as labels or density-ratio weights) and `loss` (policy and reference log-probs of
shape (B, C) and a `StepContext` -> a scalar loss and detached metrics). Everything else — batching, the
forward pass, reference handling, logging, checkpoints, DeepSpeed — lives once in the trainer.

The step context is what lets methods beyond fixed pairwise losses be written as an objective: training
progress (SPA's warm-up, schedules), collectives (KTO's batch KL point, a rolling quantile over all
processes), the batch's extra columns (labels, UDM weights, experience scores and behaviour log-probs from
the on-policy stage) and, on request (`needs_token_logps`), the policy's per-token log-probs (per-token
importance ratios) or, with `needs_token_logits`, the policy's and the reference's logits at the completion
tokens (Selfie's confidence from an extrapolated model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from alignment.policy.batching import COMPLETIONS

Collective = Callable[[torch.Tensor], torch.Tensor]


def local_collective(tensor: torch.Tensor) -> torch.Tensor:
    """A collective over one process: the all-reduce sum and the all-gather are both the identity."""
    return tensor


@dataclass
class StepContext:
    """Everything one `Objective.loss` call may read besides the (B, C) log-probs."""

    batch: dict[str, Any]  # `sequences` (SequenceBatch) + example columns, each (B, ...) on the loss's device
    training: bool  # False in evaluation: stateful objectives (BCO's reward shift) must not update
    step: int = 0  # optimizer steps completed before this one
    total_steps: int = 0  # optimizer steps planned for the run (0: unknown, e.g. outside a trainer)
    all_reduce_sum: Collective = local_collective  # sums a tensor over data-parallel processes
    all_gather: Collective = local_collective  # concatenates (N_i, ...) tensors of all processes along dim 0
    # (M,) policy log-prob of every completion token, only when the objective sets `needs_token_logps`;
    # `batch["sequences"].target_seq` (M,) names each token's sequence (b·C + c)
    policy_token_logps: torch.Tensor | None = None
    # (M, V) logits at the completion tokens, only when the objective sets `needs_token_logits` (Selfie's
    # extrapolated model (1 + λ)·h_θ − λ·h_ref): the policy's (with gradient) and the reference's (without)
    policy_token_logits: torch.Tensor | None = None
    reference_token_logits: torch.Tensor | None = None

    @property
    def progress(self) -> float:
        """Fraction of training done before this step, in [0, 1]; 0 when the total is unknown."""
        return self.step / self.total_steps if self.total_steps > 0 else 0.0


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # detached scalars, TRL-style names


@dataclass
class BuildContext:
    """What `build_examples` may need beyond the rows: D²O samples from the reference, BCO embeds prompts."""

    tokenizer: Any
    model: Any  # the initial policy (= the reference), before any training step
    seed: int = 0
    max_length: int = 1024
    sampler_factory: Callable[[], Any] | None = None  # -> alignment.sampling.base.Sampler
    sampling_config: Any = None  # recipe `sampling:` section


class Objective(ABC):
    """Base class of every method's runtime; subclasses set `num_completions` and implement two methods."""

    num_completions: int = 1
    #: extra per-example columns (numbers) the loss reads from the batch
    example_columns: tuple[str, ...] = ()
    #: the trainer fills `StepContext.policy_token_logps` (costs nothing extra: the sums are made from them)
    needs_token_logps: bool = False
    #: the trainer fills `StepContext.policy_token_logits` and `reference_token_logits` (and the per-token
    #: log-probs); needs a live reference (`model.reference` copy or adapter), set per instance from params
    needs_token_logits: bool = False
    #: on-policy data (`alignment.experience`): the registered labeller that scores the k samples of a
    #: prompt, and the registered selector that keeps C = `num_completions` of them per example
    labeller: str = "reward"
    selector: str = "best_worst"

    def __init__(self, params: Any):
        self.params = params

    @classmethod
    def needs_live_reference(cls, params: Any) -> bool:
        """Whether the loss reads the reference's logits, so precomputed log-probs will not do."""
        del params
        return False

    @abstractmethod
    def build_examples(self, dataset, ctx: BuildContext):
        """Tokenized dataset (data-layer columns) -> dataset with `completion_ids` and `example_columns`."""

    @abstractmethod
    def loss(self, policy_logps: torch.Tensor, ref_logps: torch.Tensor, ctx: StepContext) -> LossOutput:
        """(B, C) summed completion log-probs of the policy and the reference -> loss and metrics."""

    def state_dict(self) -> dict[str, Any]:
        """Training state beyond the weights (BCO's reward shift); saved in every checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def keep_columns(self, dataset):
        """Only what the collator needs: token ids, completions, per-example numbers."""
        keep = {"prompt_input_ids", COMPLETIONS, *self.example_columns}
        return dataset.remove_columns([c for c in dataset.column_names if c not in keep])


def pairwise_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, policy_logps: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The metrics every pairwise method logs (TRL's names): rewards are β·log-ratios, detached."""
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_logps[:, 0].detach().mean(),
        "logps/rejected": policy_logps[:, 1].detach().mean(),
    }


def unpaired_metrics(
    rewards: torch.Tensor, labels: torch.Tensor, policy_logps: torch.Tensor
) -> dict[str, torch.Tensor]:
    """KTO/BCO metrics: mean β·ρ of desirable ("chosen") and undesirable ("rejected") examples.

    A class absent from the micro-batch gives NaN, which the trainer's averaging skips.
    """
    nan = torch.tensor(float("nan"), device=rewards.device)

    def mean_of(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return values[mask].float().mean() if bool(mask.any()) else nan

    return {
        "rewards/chosen": mean_of(rewards, labels),
        "rewards/rejected": mean_of(rewards, ~labels),
        "logps/chosen": mean_of(policy_logps.detach(), labels),
        "logps/rejected": mean_of(policy_logps.detach(), ~labels),
    }


def paired_examples(dataset, objective: Objective):
    """Paired rows -> completions (chosen, rejected)."""
    dataset = dataset.map(
        lambda row: {COMPLETIONS: [row["chosen_input_ids"], row["rejected_input_ids"]]}, desc="building pairs"
    )
    return objective.keep_columns(dataset)


def mismatched_permutation(n: int, seed: int) -> np.ndarray:
    """σ with σ(j) ≠ j for n > 1: a cyclic shift along a seeded random order of the rows."""
    order = np.random.default_rng(seed).permutation(n)
    sigma = np.empty(n, dtype=np.int64)
    sigma[order] = np.roll(order, -1)
    return sigma


def unpaired_examples(dataset, *, with_mismatched: bool, seed: int, max_length: int):
    """Unpaired rows -> completions (y,) or (y, y') with y' another row's completion (KTO's KL pairs).

    y' is cut to fit `max_length` after the prompt; it only feeds the KL estimate.
    """
    completions = dataset["completion_input_ids"]
    sigma = mismatched_permutation(len(dataset), seed) if with_mismatched else None

    def attach(row, index):
        comps = [row["completion_input_ids"]]
        if sigma is not None:
            room = max(1, max_length - len(row["prompt_input_ids"]))
            comps.append(completions[int(sigma[index])][:room])
        return {COMPLETIONS: comps, "label": bool(row["label"])}

    return dataset.map(attach, with_indices=True, desc="building unpaired examples")
