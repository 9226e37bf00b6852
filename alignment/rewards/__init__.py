"""Rewards: `score(prompts, completions) -> (B,) tensor`. Built from the recipe's `reward:` section."""

from alignment.rewards.base import FunctionReward, Reward, build_reward, load_function

__all__ = ["FunctionReward", "Reward", "build_reward", "load_function"]
