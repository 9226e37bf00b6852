"""Evaluation against the reference: win rate, reward, KL and length on held-out prompts.

This is the toy world's stand-in for human judgement (and works with any `Reward`): sample from the policy
and from its reference on the same prompts, score both with the reward, and report

* ``win_rate`` — P(reward(policy sample) > reward(reference sample)), ties counted half, averaged over all
  n×n sample pairs of each prompt (lower variance than one pair per prompt);
* ``kl`` — KL(π_T || π_ref,T) estimated on the policy's own samples with the exact per-token formula
  (Σ_t KL of the next-token distributions), and ``kl_sampled`` — the plain mean of log π_T/π_ref,T;
* ``gold_reward`` / ``reference_gold_reward``, ``length`` (completion tokens), ``harmful_rate`` when the
  reward is the toy gold reward; best-of-N / worst-of-N win rates for each N in `best_of_n`;
* ``pairwise_accuracy`` — the policy as a pairwise classifier (Tang et al. 2024): how often its implicit
  reward log π/π_ref orders two reference (base) samples of a prompt as the judge does, and
  ``pairwise_accuracy_policy_samples`` the same on pairs of its own samples.

Both sides are `Policy` objects (sampler + log-prob scorer + optional prompt template), so any two of a
trained checkpoint, a base model inside a template and a vLLM-served model compare the same way.

The KL is that of the distributions actually sampled and compared: π_T and π_ref,T, the next-token
distributions at the evaluation temperature T (logits / T), each given its own rendered prompt, over
completions cut at `max_new_tokens`. At T = 1 it is KL(π || π_ref); greedy decoding (T = 0) has no finite
KL between two different models and is refused.

Policy and reference use different sampling seeds, so a model evaluated against itself gives two
independent sample sets: win rate ≈ 0.5 and KL = 0 (tested).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from alignment.eval.plot import best_of_n_values, plot_best_of_n, plot_eval
from alignment.eval.policy import Policy
from alignment.eval.reference_samples import reference_samples
from alignment.experience.selectors import best_or_worst
from alignment.files import write_json_atomic
from alignment.policy.batching import SequenceBatch, build_padded_batch
from alignment.policy.logps import completion_logits, gather_logps, sequence_kl, sum_per_sequence
from alignment.policy.prefix import build_prefixed_batch, completion_logits_after_prefix
from alignment.rewards.base import Reward
from alignment.sampling.base import PROGRESS_MIN_BATCHES, Completions, SamplingParams

logger = logging.getLogger(__name__)

GREEDY_KL = (
    "the KL is that of the sampled distributions, which greedy decoding (0) leaves infinite or undefined"
)


@dataclass
class EvalSettings:
    num_prompts: int = 256
    samples_per_prompt: int = 2
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 1234
    best_of_n: Sequence[int] = ()

    @classmethod
    def from_config(cls, evaluation) -> EvalSettings:
        """From a recipe's `evaluation:` section: every field the two share."""
        return cls(
            **{f.name: getattr(evaluation, f.name) for f in fields(cls) if hasattr(evaluation, f.name)}
        )

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"evaluation temperature must be > 0, got {self.temperature}: {GREEDY_KL}")
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
    """Win rate of best-of-n (or worst-of-n) policy picks against the reference's, from disjoint n-groups
    (the shared selector of `alignment.experience.selectors` picks within each group)."""
    select = best_or_worst(worst=worst)

    def picks(rewards: torch.Tensor) -> torch.Tensor:
        """(P, m) -> (P, m // n): the pick of each group of n consecutive samples."""
        groups = rewards[:, : rewards.shape[1] // n * n].reshape(-1, n)
        return select(groups).gather(groups).reshape(len(rewards), -1)

    return pairwise_win_rate(picks(policy_rewards), picks(reference_rewards))


def win_rates(policy_rewards: torch.Tensor, reference_rewards: torch.Tensor, best_of_n: Sequence[int]):
    """`win_rate` and, for each N in `best_of_n` that the (P, n) samples allow, the best-/worst-of-N win rates."""
    out = {"win_rate": pairwise_win_rate(policy_rewards, reference_rewards)}
    for k in best_of_n:
        if k <= policy_rewards.shape[1]:
            out[f"best_of_{k}_win_rate"] = best_of_n_win_rate(
                policy_rewards, reference_rewards, k, worst=False
            )
            out[f"worst_of_{k}_win_rate"] = best_of_n_win_rate(
                policy_rewards, reference_rewards, k, worst=True
            )
    return out


def pairwise_accuracy(implicit: torch.Tensor, judge: torch.Tensor) -> tuple[float, int]:
    """How well an implicit reward ranks pairs the judge prefers (Tang et al. 2024's "policy as a pairwise
    classifier"): over every pair i < j of each prompt's (P, n) samples that the judge does not tie, the share
    where the implicit reward orders them as the judge does, implicit ties counted ½; and the number of
    pairs (NaN accuracy without one)."""
    i, j = torch.triu_indices(implicit.shape[1], implicit.shape[1], offset=1)
    judged, ranked = judge[:, i] - judge[:, j], implicit[:, i] - implicit[:, j]
    keep = judged != 0
    agree = (ranked * judged > 0).double() + 0.5 * (ranked == 0).double()
    count = int(keep.sum())
    return (float(agree[keep].mean()) if count else float("nan")), count


def check_same_vocabulary(policy: Policy, reference: Policy) -> None:
    """The KL compares next-token distributions over one vocabulary: refuse two tokenizers that disagree."""
    same = policy.tokenizer is reference.tokenizer
    if not same and policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise ValueError("policy and reference tokenizers differ: the KL needs one shared vocabulary")


def policy_completion_logits(
    side: Policy, prompts: Sequence[str], completions: Sequence[Sequence[Sequence[int]]]
) -> tuple[torch.Tensor, SequenceBatch]:
    """(M, V) logits of `side`'s scorer at the completion positions, its prompts rendered by its template; a
    prefix the rendered prompts share (an in-context template's) is encoded once (`alignment.policy.prefix`).
    The batch returned indexes the logits; targets and sequence indices are the same either way."""
    pad = side.tokenizer.pad_token_id
    prompt_ids = side.prompt_ids(prompts)
    prefixed = build_prefixed_batch(prompt_ids, completions, pad_token_id=pad)
    with side.active() as scorer:
        device = next(scorer.parameters()).device
        if prefixed is not None:
            prefix, batch = prefixed
            batch = batch.to(device)
            return completion_logits_after_prefix(scorer, prefix, batch), batch
        batch = build_padded_batch(prompt_ids, completions, pad_token_id=pad).to(device)
        return completion_logits(scorer, batch), batch


@torch.no_grad()
def kl_on_samples(
    policy: Policy,
    reference: Policy,
    completions: Completions,
    *,
    temperature: float = 1.0,
    batch_size: int = 32,
    desc: str = "KL",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, n) exact per-token KL sums and (P, n) log-ratios log π_T(y)/π_ref,T(y) of the policy's samples, and
    the same log-ratios at temperature 1 (the implicit reward; the T ones again when T = 1).

    KL and the first ratios at `temperature` T (logits / T), the distributions that were sampled: the same
    token ids are scored by each side's scorer behind its own rendered prompt. The two sides are scored one
    after the other, so one peft model can be both (its adapter on for the policy, off for the reference).
    The temperature-1 ratios come from the same logits, not from a second pass.
    """
    from tqdm.auto import tqdm

    prompts, token_ids = completions.prompts, completions.token_ids
    kls, ratios, implicit = [], [], []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=len(starts) < PROGRESS_MIN_BATCHES):
        chunk, comps = prompts[start : start + batch_size], token_ids[start : start + batch_size]
        raw_pol, batch = policy_completion_logits(policy, chunk, comps)
        raw_ref = policy_completion_logits(reference, chunk, comps)[0].to(raw_pol.device)
        pol_logits, ref_logits = raw_pol / temperature, raw_ref / temperature
        kls.append(sequence_kl(pol_logits, ref_logits, batch).double().cpu())
        delta = gather_logps(pol_logits, batch.target_ids) - gather_logps(ref_logits, batch.target_ids)
        ratios.append(sum_per_sequence(delta, batch).double().cpu())
        if temperature != 1:
            delta = gather_logps(raw_pol, batch.target_ids) - gather_logps(raw_ref, batch.target_ids)
            implicit.append(sum_per_sequence(delta, batch).double().cpu())
    ratio = torch.cat(ratios)
    return torch.cat(kls), ratio, torch.cat(implicit) if implicit else ratio


def evaluate(
    policy: Policy,
    reference: Policy,
    prompts: Sequence[str],
    reward: Reward,
    settings: EvalSettings,
    *,
    harmful_fn: Any = None,
    also: dict[str, Reward] | None = None,
) -> dict[str, Any]:
    """Sample both policies, score with `reward`, compare; returns the eval.json payload plus ``_samples``,
    the (P, n) per-sample rewards and KLs behind the means (left out of eval.json; `eval_payload`).

    `also` names further judges of the same samples (e.g. the reward an on-policy run optimised, when gold
    judges it): their win rates go in under ``<name>/`` (`<name>/win_rate`, `<name>/best_of_N_win_rate`, ...).

    The reference samples first (or its samples come from an earlier evaluation that drew the same:
    `alignment.eval.reference_samples`): when a vLLM engine is shared with an on-policy trainer, it then ends
    holding the policy's weights, the ones training goes on from.
    """
    check_same_vocabulary(policy, reference)
    prompts = list(prompts)[: settings.num_prompts]
    n = settings.samples_per_prompt
    params = SamplingParams(
        n=n, temperature=settings.temperature, max_new_tokens=settings.max_new_tokens, seed=settings.seed
    )
    started = time.time()

    def phase(what: str) -> None:
        logger.info("evaluation: %s (%.0f s so far)", what, time.time() - started)

    phase(f"sampling the reference, {len(prompts)} prompts × {n}")
    ref_out = reference_samples(reference, prompts, replace(params, seed=settings.seed + 1))
    phase(f"sampling the policy, {len(prompts)} prompts × {n}")
    policy_out = policy.generate(prompts, params)
    phase("KL and implicit rewards, then scoring both sides")
    kl, ratio, implicit_pol = kl_on_samples(
        policy, reference, policy_out, temperature=settings.temperature, desc="KL, policy samples"
    )
    pol_texts, ref_texts = policy_out.flat_texts(), ref_out.flat_texts()
    pol_rewards, ref_rewards = policy_out.score(reward), ref_out.score(reward)
    # the implicit reward log π/π_ref (temperature 1) of both sample sets, for the pairwise-classifier accuracy
    implicit_ref = kl_on_samples(policy, reference, ref_out, desc="implicit reward, reference samples")[2]
    accuracy_base, pairs_base = pairwise_accuracy(implicit_ref, ref_rewards)
    accuracy_own, pairs_own = pairwise_accuracy(implicit_pol, pol_rewards)
    lengths = torch.tensor([len(ids) for per in policy_out.token_ids for ids in per], dtype=torch.float64)
    ref_lengths = torch.tensor([len(ids) for per in ref_out.token_ids for ids in per], dtype=torch.float64)
    rates = win_rates(pol_rewards, ref_rewards, settings.best_of_n)
    result: dict[str, Any] = {
        "reward": getattr(reward, "name", type(reward).__name__),
        "gold_reward": float(pol_rewards.mean()),
        "reference_gold_reward": float(ref_rewards.mean()),
        "win_rate": rates.pop("win_rate"),
        "kl": float(kl.mean()),
        "kl_sampled": float(ratio.mean()),
        "pairwise_accuracy": accuracy_base,
        "pairwise_accuracy_policy_samples": accuracy_own,
        "pairwise_pairs": pairs_base,
        "pairwise_pairs_policy_samples": pairs_own,
        "length": float(lengths.mean()),
        "reference_length": float(ref_lengths.mean()),
        "num_prompts": len(prompts),
        "samples_per_prompt": n,
        "num_samples": len(pol_texts),
        "seed": settings.seed,
        "temperature": settings.temperature,
        "max_new_tokens": settings.max_new_tokens,
    }
    if harmful_fn is not None:
        result["harmful_rate"] = float(harmful_fn(pol_texts).double().mean())
        result["reference_harmful_rate"] = float(harmful_fn(ref_texts).double().mean())
    result.update(rates)  # best-/worst-of-N
    for name, judge in (also or {}).items():
        pol, ref = policy_out.score(judge), ref_out.score(judge)
        scores = {"reward": float(pol.mean()), "reference_reward": float(ref.mean())}
        scores.update(win_rates(pol, ref, settings.best_of_n))
        result.update({f"{name}/{key}": value for key, value in scores.items()})
    result["examples"] = [
        {"prompt": prompts[i], "policy": policy_out.texts[i][0], "reference": ref_out.texts[i][0]}
        for i in range(min(5, len(prompts)))
    ]
    result["_samples"] = {
        "reward": pol_rewards,
        "reference_reward": ref_rewards,
        "kl": kl,
        "implicit": implicit_pol,
        "reference_implicit": implicit_ref,
        "reference_completions": ref_out,
    }
    phase(f"done: win rate {result['win_rate']:.3f}, KL {result['kl']:.3f}")
    return result


def eval_payload(result: dict[str, Any]) -> dict[str, Any]:
    """The eval.json keys of an `evaluate` result (its private per-sample tensors left out)."""
    return {key: value for key, value in result.items() if not key.startswith("_")}


def note_prompt_count(available: int, requested: int, key: str) -> None:
    """Say so when fewer distinct prompts exist than `requested` (the evaluation uses them all)."""
    if available < requested:
        logger.warning(
            "%s: %d prompts asked for, the prompt set has %d distinct ones: evaluating all %d",
            key, requested, available, available,
        )  # fmt: skip


def write_eval(
    result: dict[str, Any], output_dir: str | Path, history: Sequence[dict[str, Any]] = (), title: str = ""
) -> Path:
    """eval.json and eval_rewards.png: reward histograms and, when this run evaluated during training, its
    `history` (the rows of `eval_history.jsonl`), the path that led to this result."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    write_json_atomic(path, eval_payload(result))
    samples = result["_samples"]
    plot_eval(
        out / "eval_rewards.png",
        result,
        samples["reward"].flatten().tolist(),
        samples["reference_reward"].flatten().tolist(),
        history,
        title or str(out),
    )
    if len(best_of_n_values(result)) >= 2:
        plot_best_of_n(out / "eval_best_of_n.png", result)
    return path
