"""The reward interface and its kinds: a Python function, the toy world's gold reward, a reward model.

Functions are named ``module:function`` and imported (never evaluated): the recipe can only point at code
that is already importable, and a typo fails before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from alignment.callables import load_callable
from alignment.errors import RecipeError

GOLD_FUNCTION = "alignment.toy.gold:gold_reward"


class Reward(Protocol):
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """(B,) float rewards, one per (prompt, completion)."""
        ...


def load_function(spec: str, *, key: str = "reward.function") -> Callable:
    """Import a reward function `module:function` that takes (prompts, completions)."""
    return load_callable(spec, key=key, arguments=("prompts", "completions"))


class FunctionReward:
    """A Python function `f(prompts, completions) -> sequence of floats` as a Reward."""

    def __init__(self, fn: Callable, name: str = "function"):
        self.fn = fn
        self.name = name

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        values = self.fn(list(prompts), list(completions))
        return torch.as_tensor(values, dtype=torch.float64).reshape(len(completions))


def reward_config_from_cli(reward: str, reward_model: str | None = None):
    """The `reward:` section a command line's ``--reward gold|module:function`` (or ``--reward-model DIR``,
    which wins) stands for."""
    from alignment.recipe.schema import RewardConfig

    if reward_model:
        return RewardConfig(kind="model", name_or_path=reward_model)
    if reward == "gold":
        return RewardConfig(kind="gold")
    return RewardConfig(kind="function", function=reward)


def build_reward(config, *, device: str | torch.device = "cpu") -> Reward:
    """From the recipe's `reward:` section (kind gold | function | model)."""
    if config.kind == "gold":
        return FunctionReward(load_function(GOLD_FUNCTION), name="gold")
    if config.kind == "function":
        return FunctionReward(load_function(config.function), name=config.function)
    if config.kind == "model":
        from alignment.rewards.model import RewardModelScorer

        return RewardModelScorer.from_pretrained(
            config.name_or_path, batch_size=config.batch_size, device=device
        )
    raise RecipeError("reward.kind", f"reward kind '{config.kind}' cannot score completions")
