"""Evaluation against the reference: win rate, reward, KL and length on held-out prompts.

This is the toy world's stand-in for human judgement (and works with any `Reward`): sample from the policy
and from its reference on the same prompts, score both with the reward, and report

* ``win_rate`` — P(reward(policy sample) > reward(reference sample)), ties counted half, averaged over all
  n×n sample pairs of each prompt (lower variance than one pair per prompt);
* ``kl`` — KL(π || π_ref) estimated on the policy's own samples with the exact per-token formula
  (Σ_t KL of the next-token distributions), and ``kl_sampled`` — the plain mean of log π/π_ref;
* ``gold_reward`` / ``reference_gold_reward``, ``length`` (completion tokens), ``harmful_rate`` when the
  reward is the toy gold reward; best-of-N / worst-of-N win rates for each N in `best_of_n`.

Policy and reference use different sampling seeds, so a model evaluated against itself gives two
independent sample sets: win rate ≈ 0.5 and KL = 0 (tested).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignment.files import write_json_atomic
from alignment.policy.batching import build_padded_batch
from alignment.policy.logps import completion_logits, gather_logps, sequence_kl, sum_per_sequence
from alignment.rewards.base import Reward
from alignment.sampling.base import Completions, SamplingParams
from alignment.sampling.hf import TransformersSampler

logger = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    num_prompts: int = 256
    samples_per_prompt: int = 2
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 1234
    best_of_n: Sequence[int] = ()
    batch_size: int = 64

    @classmethod
    def from_config(cls, evaluation) -> EvalSettings:
        """From a recipe's `evaluation:` section: every field the two share."""
        return cls(**{f.name: getattr(evaluation, f.name) for f in fields(cls) if hasattr(evaluation, f.name)})

    def __post_init__(self) -> None:
        # best-of-N needs at least N samples per prompt from each model
        self.best_of_n = tuple(self.best_of_n)
        self.samples_per_prompt = max(self.samples_per_prompt, *self.best_of_n, 1)


def pairwise_win_rate(policy_rewards: torch.Tensor, reference_rewards: torch.Tensor) -> float:
    """(P, n) vs (P, m) rewards -> mean over prompts and all n×m pairs of 1[>] + ½·1[=]."""
    diff = policy_rewards.unsqueeze(2) - reference_rewards.unsqueeze(1)
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def best_of_n_win_rate(
    policy_rewards: torch.Tensor, reference_rewards: torch.Tensor, n: int, *, worst: bool
) -> float:
    """Win rate of best-of-n (or worst-of-n) policy picks against the reference's, from disjoint n-groups."""
    groups = policy_rewards.shape[1] // n
    pick = torch.amin if worst else torch.amax
    pol = pick(policy_rewards[:, : groups * n].reshape(len(policy_rewards), groups, n), dim=2)
    ref = pick(reference_rewards[:, : groups * n].reshape(len(reference_rewards), groups, n), dim=2)
    return pairwise_win_rate(pol, ref)


@contextlib.contextmanager
def _adapter_disabled(model: nn.Module) -> Iterator[None]:
    with model.disable_adapter():
        yield


@torch.no_grad()
def kl_on_samples(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    completions: Completions,
    *,
    batch_size: int = 32,
    reference_is_adapter: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, n) exact per-token KL sums and (P, n) sampled log-ratios log π(y)/π_ref(y) of the policy samples."""
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    token_ids = completions.token_ids
    kls, ratios = [], []
    device = next(policy.parameters()).device
    for start in range(0, len(prompts), batch_size):
        comps = token_ids[start : start + batch_size]
        # empty completions (immediate EOS is still one token) cannot occur; guard anyway
        comps = [[c if c else [tokenizer.eos_token_id] for c in per] for per in comps]
        batch = build_padded_batch(
            prompt_ids[start : start + batch_size], comps, pad_token_id=tokenizer.pad_token_id
        )
        batch = batch.to(device)
        pol_logits = completion_logits(policy, batch)
        ctx = _adapter_disabled(reference) if reference_is_adapter else contextlib.nullcontext()
        with ctx:
            ref_logits = completion_logits(reference, batch)
        kls.append(sequence_kl(pol_logits, ref_logits, batch).double().cpu())
        delta = gather_logps(pol_logits, batch.target_ids) - gather_logps(ref_logits, batch.target_ids)
        ratios.append(sum_per_sequence(delta, batch).double().cpu())
    return torch.cat(kls), torch.cat(ratios)


def evaluate(
    policy: nn.Module,
    reference: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    reward: Reward,
    settings: EvalSettings,
    *,
    reference_is_adapter: bool = False,
    harmful_fn: Any = None,
) -> dict[str, Any]:
    """Sample, score and compare; returns the eval.json payload."""
    prompts = list(prompts)[: settings.num_prompts]
    n = settings.samples_per_prompt
    params = SamplingParams(
        n=n, temperature=settings.temperature, max_new_tokens=settings.max_new_tokens, seed=settings.seed
    )
    was_training = policy.training
    policy.eval()
    try:
        policy_out = TransformersSampler(policy, tokenizer, batch_size=settings.batch_size).generate(
            prompts, params
        )
        ref_params = SamplingParams(**{**params.__dict__, "seed": settings.seed + 1})
        ctx = _adapter_disabled(reference) if reference_is_adapter else contextlib.nullcontext()
        with ctx:
            ref_out = TransformersSampler(reference, tokenizer, batch_size=settings.batch_size).generate(
                prompts, ref_params
            )
        kl, ratio = kl_on_samples(
            policy, reference, tokenizer, prompts, policy_out, reference_is_adapter=reference_is_adapter
        )
    finally:
        policy.train(was_training)
    pol_texts, ref_texts = policy_out.flat_texts(), ref_out.flat_texts()
    pol_rewards, ref_rewards = policy_out.score(reward), ref_out.score(reward)
    lengths = torch.tensor([len(ids) for per in policy_out.token_ids for ids in per], dtype=torch.float64)
    ref_lengths = torch.tensor([len(ids) for per in ref_out.token_ids for ids in per], dtype=torch.float64)
    result: dict[str, Any] = {
        "reward": getattr(reward, "name", type(reward).__name__),
        "gold_reward": float(pol_rewards.mean()),
        "reference_gold_reward": float(ref_rewards.mean()),
        "win_rate": pairwise_win_rate(pol_rewards, ref_rewards),
        "kl": float(kl.mean()),
        "kl_sampled": float(ratio.mean()),
        "length": float(lengths.mean()),
        "reference_length": float(ref_lengths.mean()),
        "num_prompts": len(prompts),
        "samples_per_prompt": n,
        "num_samples": len(pol_texts),
        "seed": settings.seed,
    }
    if harmful_fn is not None:
        result["harmful_rate"] = float(harmful_fn(pol_texts).double().mean())
        result["reference_harmful_rate"] = float(harmful_fn(ref_texts).double().mean())
    for k in settings.best_of_n:
        if k <= n:
            result[f"best_of_{k}_win_rate"] = best_of_n_win_rate(pol_rewards, ref_rewards, k, worst=False)
            result[f"worst_of_{k}_win_rate"] = best_of_n_win_rate(pol_rewards, ref_rewards, k, worst=True)
    result["examples"] = [
        {"prompt": prompts[i], "policy": policy_out.texts[i][0], "reference": ref_out.texts[i][0]}
        for i in range(min(5, len(prompts)))
    ]
    result["_rewards"] = (pol_rewards.flatten().tolist(), ref_rewards.flatten().tolist())
    return result


def write_eval(result: dict[str, Any], output_dir: str | Path) -> Path:
    """eval.json (without raw reward lists) and eval_rewards.png (reward histograms, policy vs reference)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pol, ref = result.pop("_rewards", ([], []))
    path = out / "eval.json"
    write_json_atomic(path, result)
    if pol:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist([ref, pol], bins=30, label=["reference", "policy"], alpha=0.8)
        ax.set_xlabel(f"{result['reward']} reward")
        ax.set_ylabel("samples")
        ax.set_title(f"win rate {result['win_rate']:.3f}, KL {result['kl']:.3f}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "eval_rewards.png", dpi=110)
        plt.close(fig)
    return path
