"""Selectors: (P, k) scores of k samples per prompt -> which samples become each example's C completions.

The one implementation of picking in the library: the online trainer's pairs, `alignment generate
--select best|worst`, the toy builders and the best-of-N / worst-of-N win rates all select here, so they
agree on tie-breaking. Ties among equal best (or worst) scores go to the lowest sample index — the
documented first-occurrence rule of `torch.argmax` / `torch.argmin`.

Registered names (`SELECTORS`):
* ``best_worst`` — C = 2, (best, worst) per prompt; a prompt whose k scores are all equal carries no
  preference and is skipped (counted in `Selection.skipped`);
* ``all`` — C = k, every sample in its sampled order (policy-gradient losses weigh them by their scores);
* ``best_of_n`` / ``worst_of_n`` — C = 1, the highest- / lowest-scored sample of each prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from alignment.registry import Registry


class Selection(NamedTuple):
    """Which samples were kept. B = examples kept, C = completions each; unpacks as (rows, index, skipped)."""

    rows: torch.Tensor  # (B,) long, the prompt of each example
    index: torch.Tensor  # (B, C) long, the sample index in [0, k) of each completion
    skipped: int  # prompts that gave no example

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """(P, k) per-sample values (scores, log-probs) -> (B, C) values of the kept completions."""
        return values[self.rows].gather(1, self.index)


Selector = Callable[[torch.Tensor], Selection]

SELECTORS: Registry[Selector] = Registry("selector")


def _check_scores(scores: torch.Tensor, *, min_k: int) -> None:
    if scores.dim() != 2 or scores.shape[1] < min_k:
        raise ValueError(f"need (P, k >= {min_k}) scores, got shape {tuple(scores.shape)}")


def _every_prompt(index: torch.Tensor) -> Selection:
    """One example per prompt, nothing skipped."""
    return Selection(torch.arange(len(index), device=index.device), index, 0)


@SELECTORS.register("best_worst")
def select_best_worst(scores: torch.Tensor) -> Selection:
    """(best, worst) per prompt; prompts whose k scores all tie are skipped and counted."""
    _check_scores(scores, min_k=2)
    informative = scores.amax(dim=1) > scores.amin(dim=1)
    rows = informative.nonzero().squeeze(1)
    index = torch.stack([scores.argmax(dim=1)[rows], scores.argmin(dim=1)[rows]], dim=1)
    return Selection(rows, index, int((~informative).sum()))


@SELECTORS.register("all")
def select_all(scores: torch.Tensor) -> Selection:
    """Every sample of every prompt, ties included: a loss on all k decides itself what a tie is worth."""
    _check_scores(scores, min_k=1)
    return _every_prompt(torch.arange(scores.shape[1], device=scores.device).expand(scores.shape[0], -1))


@SELECTORS.register("best_of_n")
def select_best(scores: torch.Tensor) -> Selection:
    """The highest-scored sample of each prompt (best-of-N)."""
    _check_scores(scores, min_k=1)
    return _every_prompt(scores.argmax(dim=1, keepdim=True))


@SELECTORS.register("worst_of_n")
def select_worst(scores: torch.Tensor) -> Selection:
    """The lowest-scored sample of each prompt (worst-of-N: what an attacker who resamples gets)."""
    _check_scores(scores, min_k=1)
    return _every_prompt(scores.argmin(dim=1, keepdim=True))


def best_or_worst(*, worst: bool) -> Selector:
    """The best-of-N selector, or worst-of-N with ``worst=True`` (the flag `alignment generate` and
    evaluation expose)."""
    return SELECTORS.get("worst_of_n" if worst else "best_of_n")
