"""A reward function the run tests name as `alignment_test_rewards:length` (tests/trainers is on sys.path)."""

from __future__ import annotations


def length(prompts: list[str], completions: list[str]) -> list[float]:
    """The completion's length in characters."""
    del prompts
    return [float(len(c)) for c in completions]
