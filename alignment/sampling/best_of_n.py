"""Best-of-N (and worst-of-N) selection: sample n completions per prompt, keep the one the reward ranks
highest (lowest with ``worst=True``). Used for rejection-sampling fine-tuning, for building on-policy
preference pairs (best vs worst) and as an inference-time baseline to compare trained policies against.
The pick is the shared best-of-n / worst-of-n selector of `alignment.experience.selectors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from alignment.experience.selectors import best_or_worst
from alignment.sampling.base import Completions, Sampler, SamplingParams


@dataclass
class BestOfN:
    prompts: list[str]  # P
    texts: list[str]  # P, the selected completion of each prompt
    rewards: torch.Tensor  # (P,) reward of the selected completion
    all_rewards: torch.Tensor  # (P, n) reward of every sample
    chosen: torch.Tensor  # (P,) long, index in [0, n) of the selected sample
    completions: Completions  # everything that was sampled (P x n), for pairs and diagnostics


def best_of_n(
    sampler: Sampler, reward, prompts: Sequence[str], n: int, params: SamplingParams, *, worst: bool = False
) -> BestOfN:
    """Sample ``n`` completions per prompt (``params.n`` is overridden) and select by ``reward.score``.

    ``reward`` is anything with ``score(prompts, completions) -> Tensor (B,)``; it is called once on the
    P*n flattened pairs. Ties go to the lowest sample index.
    """
    from dataclasses import replace

    prompts = list(prompts)
    completions = sampler.generate(prompts, replace(params, n=n))
    all_rewards = completions.score(reward)
    selection = best_or_worst(worst=worst)(all_rewards)
    chosen = selection.index[:, 0]
    texts = [completions.texts[p][int(i)] for p, i in enumerate(chosen)]
    rewards = selection.gather(all_rewards)[:, 0]
    return BestOfN(
        prompts=prompts,
        texts=texts,
        rewards=rewards,
        all_rewards=all_rewards,
        chosen=chosen,
        completions=completions,
    )
