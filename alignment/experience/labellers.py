"""Labellers: `Samples` -> (P, k) float64 scores, higher is better (the label step of the experience stage).

Labellers are built *after* the policy, its reference and the sampler exist, so a labeller may score with
the models being trained. The online run builds one with

    build_labeller(name, LabellerContext(tokenizer=..., reward=..., policy=..., reference=..., beta=...))

where `name` is the objective's `labeller` and the context carries every input any labeller may need
(each labeller reads only its own). The recipe's reward is built earlier and handed over in the context,
so a missing reward model still fails before the policy loads: `LABELLERS.get(name).needs_reward` tells
the run whether to build one.

`Labeller.prepare(prompts)` runs once before training with every training prompt (the online trainer calls
it at the start of `train`), for labellers that sample and score ahead of time; the default does nothing.

Registered names (`LABELLERS`):
* ``reward`` — any `Reward` (gold, a function, a reward model) on the samples;
* ``implicit`` — the implicit reward β·(log π(y|x) − log π_ref(y|x)) of one model against another, summed
  over the sampled completion tokens (Selfie/SPA's "direct preference judgment", arXiv:2406.04412 eq. 7);
* ``calibrated`` — the reward's empirical CDF among m reference samples of the same prompt (InfAlign/CTRL's
  calibration step, arXiv:2412.19792).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from alignment.distributed import main_process_first
from alignment.experience.samples import Samples
from alignment.policy.batching import COMPLETIONS
from alignment.policy.reference import compute_reference_logps, model_weights_hash, reference_context
from alignment.registry import Registry
from alignment.rewards.base import Reward
from alignment.sampling.base import Sampler, SamplingParams
from alignment.sampling.hf import TransformersSampler

logger = logging.getLogger("alignment")


@dataclass
class LabellerContext:
    """Everything a labeller may be built from; each labeller checks that what it needs is there."""

    tokenizer: Any
    reward: Reward | None = None  # the recipe's reward, built before the policy (a missing model fails fast)
    policy: nn.Module | None = None  # the trained policy, the live module (implicit: π)
    reference: nn.Module | None = None  # the frozen model compared against (implicit: π_ref; calibrated)
    reference_is_adapter: bool = False  # the reference is `policy` with its LoRA adapter off (no `reference`)
    beta: float = 0.1  # implicit reward scale
    sampling_params: SamplingParams = field(default_factory=SamplingParams)  # calibrated: how z_m are drawn
    reference_samples: int = 16  # calibrated: m reference samples per prompt
    batch_size: int = 16  # implicit: examples per forward pass; calibrated: prompts per generate call
    cache_dir: str | None = (
        None  # calibrated: where reference rollouts' rewards are cached (None: not cached)
    )
    reward_key: str = ""  # calibrated: what identifies the reward in the cache key (its recipe section)
    # calibrated: the run's own sampler when it is a vLLM engine (its weights are set to the reference's for the
    # rollouts); None: transformers generate on the reference model
    engine: Sampler | None = None


class Labeller(ABC):
    """Scores samples; built from a `LabellerContext` by `build_labeller`."""

    needs_reward: ClassVar[bool] = False  # whether `from_context` reads `LabellerContext.reward`

    @classmethod
    @abstractmethod
    def from_context(cls, ctx: LabellerContext) -> Labeller:
        """The labeller for this run; ValueError naming the missing input."""

    def prepare(self, prompts: Sequence[str]) -> None:
        """Once before training, with every training prompt (repeats allowed); nothing by default."""
        del prompts

    @abstractmethod
    def __call__(self, samples: Samples) -> torch.Tensor:
        """(P, k) float64 scores of every sample, on the CPU."""


LABELLERS: Registry[type[Labeller]] = Registry("labeller")


def build_labeller(name: str, ctx: LabellerContext) -> Labeller:
    """The registered labeller `name` (an objective's `labeller`) built from `ctx`."""
    return LABELLERS.get(name).from_context(ctx)


def _require(value: Any, what: str, labeller: str) -> Any:
    if value is None:
        raise ValueError(f"labeller '{labeller}' needs {what}")
    return value


@LABELLERS.register("reward")
class RewardLabeller(Labeller):
    """Scores with any `Reward` on the P·k flattened (prompt, text) pairs."""

    needs_reward = True

    def __init__(self, reward: Reward):
        self.reward = reward

    @classmethod
    def from_context(cls, ctx: LabellerContext) -> RewardLabeller:
        return cls(_require(ctx.reward, "a reward (reward.kind must not be 'none')", "reward"))

    def __call__(self, samples: Samples) -> torch.Tensor:
        return samples.completions.score(self.reward).cpu()


@LABELLERS.register("implicit")
class ImplicitRewardLabeller(Labeller):
    """β·(log π(y|x) − log π_ref(y|x)), log-probs summed over the sampled tokens, without length
    normalisation (SPA's judge). Both models run in eval mode (no dropout) without gradients, through the
    same summed log-prob forward as the precomputed reference (`compute_reference_logps`), so the score is
    the DPO implicit reward of the sample.

    In an online run π is the live policy, so the labels follow training; SPA's judge reference is the
    initial model π_init, which is what `LabellerContext.reference` holds in an online run.
    """

    def __init__(
        self,
        model: nn.Module,
        reference: nn.Module | None,
        *,
        pad_token_id: int,
        beta: float,
        reference_is_adapter: bool = False,
        batch_size: int = 16,
    ):
        if reference is None and not reference_is_adapter:
            raise ValueError("labeller 'implicit' needs a reference model or an adapter reference")
        self.model = model
        self.reference = model if reference_is_adapter else reference
        self.reference_mode = "adapter" if reference_is_adapter else "copy"
        self.pad_token_id = pad_token_id
        self.beta = beta
        self.batch_size = batch_size

    @classmethod
    def from_context(cls, ctx: LabellerContext) -> ImplicitRewardLabeller:
        return cls(
            _require(ctx.policy, "the policy", "implicit"),
            ctx.reference,
            pad_token_id=ctx.tokenizer.pad_token_id,
            beta=ctx.beta,
            reference_is_adapter=ctx.reference_is_adapter,
            batch_size=ctx.batch_size,
        )

    def _logps(self, model: nn.Module, rows, mode: str) -> torch.Tensor:
        return torch.from_numpy(
            compute_reference_logps(
                model, rows, pad_token_id=self.pad_token_id, batch_size=self.batch_size, mode=mode
            )
        )

    def __call__(self, samples: Samples) -> torch.Tensor:
        from datasets import Dataset

        rows = Dataset.from_dict(
            {"prompt_input_ids": samples.prompt_ids, COMPLETIONS: samples.completions.token_ids}
        )
        policy = self._logps(self.model, rows, "copy")  # "copy": a plain no-grad forward of `model`
        return self.beta * (policy - self._logps(self.reference, rows, self.reference_mode))


@contextlib.contextmanager
def pushed_weights(engine: Sampler, model: nn.Module):
    """`engine` holding `model`'s weights (CTRL's reference rollouts through the run's vLLM engine). Nothing to
    restore after: before training the engine holds the initial policy, which is the reference, and a resumed
    run pushes the policy's weights before its first sampling anyway."""
    from alignment.sampling.vllm import model_state_for_sync

    engine.load_weights(model_state_for_sync(model))
    yield


class RolloutCache:
    """Rewards of the reference rollouts on disk, one .npy file of (P, m) rewards per key: the prompts (in order),
    the reference's weights, the reward, the sampling settings and the sampler (a vLLM engine's draws are not
    transformers'). Written atomically; a second run with the same inputs loads them instead of sampling and
    scoring again."""

    def __init__(
        self,
        root: Path,
        *,
        weights: str,
        reward: str,
        params: SamplingParams,
        sampler: str = "TransformersSampler",
    ):
        self.root = root
        self.parts = {"weights": weights, "reward": reward, "sampling": dataclasses.asdict(params)}
        if sampler != "TransformersSampler":  # (the key of transformers-drawn rollouts stays what it was)
            self.parts["sampler"] = sampler
        self.hit = False

    def path(self, prompts: Sequence[str]) -> Path:
        key = json.dumps({**self.parts, "prompts": list(prompts)}, sort_keys=True, default=str)
        return self.root / "reference-rollouts" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"

    def load(self, prompts: Sequence[str]) -> torch.Tensor | None:
        path = self.path(prompts)
        self.hit = path.exists()
        return torch.from_numpy(np.load(path)) if self.hit else None

    def save(self, prompts: Sequence[str], rewards: torch.Tensor) -> None:
        path = self.path(prompts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npy")
        np.save(tmp, rewards.double().numpy())
        os.replace(tmp, path)


def empirical_cdf(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(P, k) values, (P, m) reference values of the same prompts -> (P, k) in [0, 1]:
    (1/m)·Σ_j 1[z_j < v] + ½·1[z_j = v], the fraction of reference values below v, ties counted half."""
    diff = values.unsqueeze(2) - reference.unsqueeze(1)  # (P, k, m)
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean(dim=2)


@LABELLERS.register("calibrated")
class CalibratedRewardLabeller(Labeller):
    """CTRL's calibrated reward C(x, y) = P_{z~π_ref(.|x)}[r(x,z) < r(x,y)] + ½·P[r(x,z) = r(x,y)], estimated
    with m reference samples per training prompt (InfAlign, arXiv:2412.19792, "CTRL" step 1).

    `prepare` samples the m completions of every training prompt from the frozen reference once, with the
    run's sampling settings, and scores them; a sample's score is then its reward's empirical CDF among its
    prompt's reference rewards (`empirical_cdf`), in {0, 1/2m, ..., 1}. Calibration removes per-prompt
    offsets and any increasing rescaling of the reward, and under π_ref the score is uniform on [0, 1].

    Where this follows the paper and where it deviates:
    * the reference samples use the run's sampling settings (temperature, top-p, max_new_tokens), not
      plain temperature-1 sampling: C then compares the policy's samples with reference samples drawn
      the same way, which is what the win rate the run is judged by compares;
    * the paper's transform Φ (identity for win rate, exp(t·u) for best-of-N, −exp(−t·u) for worst-of-N)
      is not applied here: the labeller returns u = C, and a transform belongs to the objective that
      chooses which inference-time win rate it optimises;
    * the resolution is 1/(2m) and C saturates at 1 once a sample beats all m (the paper's pitfall 2):
      choose m for the quantile that matters;
    * every process holds the references of every training prompt (not only its shard). With a rollout
      cache, the main process samples them and the others load its file (`main_process_first`); without
      one, every process samples them (the same draws: the same seed), m samples per prompt, once.
    """

    needs_reward = True

    def __init__(
        self,
        reward: Reward,
        reference_sampler: Sampler,
        params: SamplingParams,
        *,
        reference_scope: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        cache: RolloutCache | None = None,
    ):
        self.reward = reward
        self.reference_sampler = reference_sampler
        self.params = params  # n = m reference samples per prompt
        # entered around sampling: an adapter reference's adapter off; an engine given the reference's weights
        self.reference_scope = reference_scope
        self.cache = cache
        self.reference_rewards: dict[str, torch.Tensor] = {}  # prompt -> (m,) rewards of its z_1..z_m
        self.stats: dict[str, Any] = {}  # how the reference rewards were obtained (online_stats.json)

    @classmethod
    def from_context(cls, ctx: LabellerContext) -> CalibratedRewardLabeller:
        reward = _require(ctx.reward, "a reward (reward.kind must not be 'none')", "calibrated")
        model = ctx.policy if ctx.reference_is_adapter else ctx.reference
        model = _require(
            model, "the reference model (or the policy, with an adapter reference)", "calibrated"
        )
        seed = ctx.sampling_params.seed
        params = dataclasses.replace(  # the reference's own seed (as in evaluation): not the policy's draws
            ctx.sampling_params, n=ctx.reference_samples, seed=None if seed is None else seed + 1
        )
        adapter_off = (
            functools.partial(reference_context, model, "adapter")
            if ctx.reference_is_adapter
            else contextlib.nullcontext
        )
        if ctx.engine is not None and not ctx.reference_is_adapter:  # m samples per prompt: vLLM's strength
            sampler, scope = ctx.engine, functools.partial(pushed_weights, ctx.engine, model)
        else:
            sampler, scope = TransformersSampler(model, ctx.tokenizer, batch_size=ctx.batch_size), adapter_off
        cache = None
        if ctx.cache_dir is not None:
            with adapter_off():
                weights = model_weights_hash(model)
            cache = RolloutCache(
                Path(ctx.cache_dir),
                weights=weights,
                reward=ctx.reward_key,
                params=params,
                sampler=type(sampler).__name__,
            )
        return cls(reward, sampler, params, reference_scope=scope, cache=cache)

    def prepare(self, prompts: Sequence[str]) -> None:
        unique = list(dict.fromkeys(prompts))
        started = time.perf_counter()
        with main_process_first() if self.cache is not None else contextlib.nullcontext():
            rewards = self.cache.load(unique) if self.cache is not None else None
            if rewards is None:
                with self.reference_scope():
                    completions = self.reference_sampler.generate(unique, self.params)
                rewards = completions.score(self.reward).cpu()
                if self.cache is not None:
                    self.cache.save(unique, rewards)
        seconds = time.perf_counter() - started
        hit = self.cache is not None and self.cache.hit
        self.reference_rewards = dict(zip(unique, rewards, strict=True))
        self.stats = {
            "prompts": len(unique),
            "samples_per_prompt": self.params.n,
            "cache_hit": hit,
            "cache_file": str(self.cache.path(unique)) if self.cache is not None else None,
            "seconds": round(seconds, 2),
        }
        logger.info(
            "calibrated labeller: %d reference rollouts for each of %d prompts %s in %.1f s%s",
            self.params.n,
            len(unique),
            "loaded from the cache" if hit else "sampled and scored",
            seconds,
            f" ({self.stats['cache_file']})" if self.cache is not None else "",
        )

    def __call__(self, samples: Samples) -> torch.Tensor:
        prompts = samples.completions.prompts
        missing = [p for p in prompts if p not in self.reference_rewards]
        if missing:
            raise RuntimeError(
                f"calibrated labeller: no reference samples for prompt {missing[0]!r} (prepare first)"
            )
        reference = torch.stack([self.reference_rewards[p] for p in prompts])
        return empirical_cdf(samples.completions.score(self.reward).cpu(), reference)
