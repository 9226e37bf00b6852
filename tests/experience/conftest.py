"""Hand-made pieces for the experience-stage tests: a sampler that answers from a table, and a reward that
reads a number off the completion text (so expected scores can be written down by hand)."""

from __future__ import annotations

import pytest
import torch

from alignment.sampling.base import Completions


class NumberReward:
    """reward(prompt, "2.5") = 2.5: the completion text is its own score."""

    def score(self, prompts, completions):
        return torch.tensor([float(c) for c in completions], dtype=torch.float64)


class TableSampler:
    """Answers every prompt with its fixed completions (token ids from the tokenizer, ending with EOS) and,
    when asked for log-probs, the fixed value -(prompt index + sample index / 10)."""

    def __init__(self, table: dict[str, list[str]], tokenizer):
        self.table = table
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[str], int]] = []  # (prompts, n) of each generate call

    def generate(self, prompts, params):
        prompts = list(prompts)
        self.calls.append((prompts, params.n))
        texts = [self.table[p][: params.n] for p in prompts]
        ids = [
            [
                self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                for t in per
            ]
            for per in texts
        ]
        order = list(self.table)
        logprobs = [[-(order.index(p) + j / 10) for j in range(len(per))] for p, per in zip(prompts, texts)]
        return Completions(prompts, texts, ids, logprobs if params.logprobs else None)

    def load_weights(self, named_tensors):
        """A trainer pushes weights after each step; a table has none to take."""
        del named_tensors


@pytest.fixture
def number_reward() -> NumberReward:
    return NumberReward()


@pytest.fixture
def table_sampler():
    """`table_sampler(table, tokenizer)` -> a `TableSampler`."""
    return TableSampler
