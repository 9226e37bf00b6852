"""The typed hand-offs of the experience stage: `Samples` (sampler -> labeller) and `Experience`
(selector -> trainer). P = prompts, k = samples per prompt, B = examples kept, C = completions each."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment.policy.batching import SequenceBatch, build_packed_batch
from alignment.sampling.base import Completions

SCORES = "scores"  # batch column: (B, C) labeller score of each kept completion
BEHAVIOUR_LOGPS = "behaviour_logps"  # batch column: (B, C) summed log-prob under the sampling model


@dataclass
class Samples:
    """What the sample stage hands on."""

    prompt_ids: list[list[int]]  # P x T_p, `tokenizer(prompt)["input_ids"]`, what the sampler saw
    completions: Completions  # P x k texts and generated token ids (and log-probs when asked for)


@dataclass
class Experience:
    """One micro-batch of on-policy examples, with everything the loss may read about them."""

    prompt_ids: list[list[int]]  # B x T_p
    rows: torch.Tensor  # (B,) long, the sampled prompt (in [0, P)) of each example
    completion_ids: list[list[list[int]]]  # B x C x T_i, sampled ids (end with EOS when sampling stopped)
    scores: torch.Tensor  # (B, C) labeller score of each kept completion
    behaviour_logps: torch.Tensor | None  # (B, C) sampler's summed log-probs (temperature 1), when asked
    all_scores: torch.Tensor  # (P, k) every sample's score
    lengths: torch.Tensor  # (P, k) generated tokens per sample
    skipped: int  # prompts without an example (e.g. all k scores tied under `best_worst`)
    seconds: dict[str, float]  # {"sample": s, "score": s}

    @property
    def num_examples(self) -> int:
        return len(self.prompt_ids)

    def sequences(self, *, pad_token_id: int, pack_length: int | None) -> SequenceBatch:
        return build_packed_batch(
            self.prompt_ids, self.completion_ids, pad_token_id=pad_token_id, pack_length=pack_length
        )

    def columns(self) -> dict[str, torch.Tensor]:
        """The per-example columns that travel in the batch dict next to `sequences`, each (B, C): the
        objective's loss reads them from `StepContext.batch` (scores for policy-gradient losses,
        behaviour log-probs for importance ratios)."""
        columns = {SCORES: self.scores}
        if self.behaviour_logps is not None:
            columns[BEHAVIOUR_LOGPS] = self.behaviour_logps
        return columns

    def metrics(self) -> dict[str, float]:
        return {  # NaN without examples (the mean of nothing): the trainer's log skips it
            "online/reward_chosen": float(self.scores[:, 0].mean()),
            "online/reward_rejected": float(self.scores[:, -1].mean()),
            "online/reward_mean": float(self.all_scores.mean()),
            "online/completion_length": float(self.lengths.double().mean()),
        }
