"""Token-distribution shift: at which tokens, and how much, an aligned model departs from its base model.

The analysis of Lin et al. 2024 ("The Unlocking Spell on Base LLMs", URIAL): decode the *aligned* model
greedily, then ask at every position how the *base* model ranks the token the aligned model chose, given the
same context. If alignment mostly re-ranks a few stylistic tokens (the paper finds ~78-82 % of positions
unshifted for three 7B pairs, the shifted ones mostly discourse markers and concentrated early), a base model
prompted well (URIAL) can be expected to behave much like the aligned one.

What exactly is counted:

* **Decoding.** The aligned policy decodes greedily: one completion per prompt, temperature 0, at most
  `max_new_tokens` tokens, ending at EOS or before the first of its stop strings, behind its own rendered
  prompt (its template, e.g. a URIAL prefix or a chat format).
* **Positions.** A position is one completion token o_t, t = 0, 1, ... from the first generated token. The
  tokens are those the sampler returns: the final EOS counts when it was generated (stopping is the aligned
  model's choice too); a completion cut at a stop string contributes the tokens it kept (never the stop
  string); one cut at `max_new_tokens` contributes all of them; an empty completion contributes none.
* **Base rank.** η_t = 1 + |{v : z_base(v) > z_base(o_t)}|, z_base the base model's next-token logits over
  its whole output vocabulary, given the *base's* rendered prompt + o_<t. Strictly greater: a tie with the
  top logit is rank 1, so a model compared with itself is unshifted everywhere. Classes: **unshifted** η = 1,
  **marginal** η ∈ {2, 3}, **shifted** η > 3.
* **KL.** KL_t = KL(P_base(·|ctx) ‖ P_aligned(·|ctx)) of the two next-token distributions at temperature 1,
  each model given its own rendered prompt + o_<t, summed over the vocabulary.
* **Fractions** are over all positions of all prompts (token-weighted). The **profile** at position t averages
  over the completions that reach t (its `count`), so late positions rest on fewer, longer completions.

Each side is scored behind its own rendered prompt because that is the question asked: the aligned model
produced o_t in its context (chat format, in-context examples); would the base model, given the plain
request and the same answer so far, have produced it too? Both sides are `Policy` objects, scored by one
padded forward per batch and side (the same batching as the evaluation KL), so one peft model can be both
sides (adapter on for one, off for the other).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alignment.analysis.plot import plot_shift
from alignment.eval.gold import check_same_vocabulary, policy_completion_logits
from alignment.eval.policy import Policy
from alignment.files import write_json_atomic
from alignment.sampling.base import SamplingParams

MARGINAL_MAX_RANK = 3  # η ∈ {2, 3} is marginal, η > 3 shifted (the paper's thresholds)
CLASSES = ("unshifted", "marginal", "shifted")
TOP_TOKENS = 20
NUM_EXAMPLES = 5


def shift_class(rank: int) -> str:
    """The paper's class of a base rank: unshifted (1), marginal (2-3) or shifted (> 3)."""
    if rank == 1:
        return "unshifted"
    return "marginal" if rank <= MARGINAL_MAX_RANK else "shifted"


def base_rank(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M, V) logits, (M,) token ids -> (M,) 1 + number of entries with a strictly greater logit.

    Counting (rather than sorting) is exact for ties and needs no (M, V) index tensor.
    """
    target_logits = logits.gather(-1, targets.unsqueeze(-1))
    return (logits > target_logits).sum(-1) + 1


def next_token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """(M, V), (M, V) logits -> (M,) KL(softmax p ‖ softmax q), at least in float32 (bf16 sums drift)."""
    dtype = torch.promote_types(p_logits.dtype, torch.float32)
    logp = torch.log_softmax(p_logits.to(dtype), dim=-1)
    logq = torch.log_softmax(q_logits.to(dtype), dim=-1)
    return F.kl_div(logq, logp, reduction="none", log_target=True).sum(-1)


@dataclass
class PositionStats:
    """The shift at completion position t, over the `count` completions that reach it."""

    position: int
    count: int
    unshifted: float
    marginal: float
    shifted: float
    kl: float


@dataclass
class TokenCount:
    """A token and how often it falls in a class; `share` is of all positions of that class."""

    token: str
    id: int
    count: int
    share: float


@dataclass
class ShiftResult:
    """Per-position base ranks and KLs of the aligned model's greedy completions, and their summaries.

    The per-sample lists are the record; fractions, the position profile and token counts derive from them
    (module docstring: what a position is, how ranks and KLs are defined). `to_json()` is shift.json.
    """

    prompts: list[str]
    completions: list[str]  # decoded without special tokens, as the sampler returns them
    token_ids: list[list[int]]  # P x T_i aligned tokens, the final EOS included when generated
    token_texts: list[list[str]]  # each token decoded on its own (special tokens kept: EOS reads '</s>')
    ranks: list[list[int]]  # base rank of each token
    kls: list[list[float]]  # KL(P_base ‖ P_aligned) at each position
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        lengths = [len(ids) for ids in self.token_ids]
        for name in ("token_texts", "ranks", "kls"):
            if [len(row) for row in getattr(self, name)] != lengths:
                raise ValueError(f"ShiftResult.{name} must have one entry per completion token")
        classes = Counter(shift_class(r) for row in self.ranks for r in row)
        self.counts = {name: classes[name] for name in CLASSES}

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)

    @property
    def num_tokens(self) -> int:
        return sum(self.counts.values())

    def fraction(self, name: str) -> float:
        """Share of all positions in class `name` (0.0 when there are none)."""
        return self.counts[name] / self.num_tokens if self.num_tokens else 0.0

    @property
    def unshifted(self) -> float:
        return self.fraction("unshifted")

    @property
    def marginal(self) -> float:
        return self.fraction("marginal")

    @property
    def shifted(self) -> float:
        return self.fraction("shifted")

    @property
    def mean_kl(self) -> float:
        """KL per position, averaged over all positions."""
        values = [kl for row in self.kls for kl in row]
        return sum(values) / len(values) if values else 0.0

    def profile(self) -> list[PositionStats]:
        """The shift by position t = 0..T-1, T the longest completion."""
        out = []
        for t in range(max((len(row) for row in self.ranks), default=0)):
            at_t = [(ranks[t], kls[t]) for ranks, kls in zip(self.ranks, self.kls) if len(ranks) > t]
            classes = Counter(shift_class(rank) for rank, _ in at_t)
            n = len(at_t)
            out.append(
                PositionStats(
                    position=t,
                    count=n,
                    unshifted=classes["unshifted"] / n,
                    marginal=classes["marginal"] / n,
                    shifted=classes["shifted"] / n,
                    kl=sum(kl for _, kl in at_t) / n,
                )
            )
        return out

    def top_tokens(self, name: str = "shifted", k: int = TOP_TOKENS) -> list[TokenCount]:
        """The `k` most frequent tokens of class `name`, counted by id (ties: first seen first)."""
        hits: Counter[int] = Counter()
        text: dict[int, str] = {}
        for ids, texts, ranks in zip(self.token_ids, self.token_texts, self.ranks):
            for token, token_text, rank in zip(ids, texts, ranks):
                if shift_class(rank) == name:
                    hits[token] += 1
                    text[token] = token_text
        total = self.counts[name]
        return [TokenCount(text[i], i, n, n / total) for i, n in hits.most_common(k)]

    def examples(self, k: int = NUM_EXAMPLES) -> list[dict[str, Any]]:
        """The first `k` decodes, each token with its base rank and KL."""
        return [
            {
                "prompt": self.prompts[i],
                "completion": self.completions[i],
                "tokens": [
                    {"token": text, "id": token, "rank": rank, "kl": kl}
                    for token, text, rank, kl in zip(
                        self.token_ids[i], self.token_texts[i], self.ranks[i], self.kls[i]
                    )
                ],
            }
            for i in range(min(k, self.num_prompts))
        ]

    def to_json(self, *, top_k: int = TOP_TOKENS, num_examples: int = NUM_EXAMPLES) -> dict[str, Any]:
        """The shift.json payload (docs/metrics.md lists every key)."""
        return {
            "unshifted": self.unshifted,
            "marginal": self.marginal,
            "shifted": self.shifted,
            "counts": dict(self.counts),
            "kl": self.mean_kl,
            "num_prompts": self.num_prompts,
            "num_tokens": self.num_tokens,
            "max_new_tokens": self.max_new_tokens,
            "stop": list(self.stop),
            "positions": [vars(stats) for stats in self.profile()],
            "top_shifted": [vars(tc) for tc in self.top_tokens("shifted", top_k)],
            "top_unshifted": [vars(tc) for tc in self.top_tokens("unshifted", top_k)],
            "examples": self.examples(num_examples),
        }


@torch.no_grad()
def score_shift(
    base: Policy,
    aligned: Policy,
    prompts: Sequence[str],
    completions: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
) -> tuple[list[list[int]], list[list[float]]]:
    """Per-token base ranks and KL(P_base ‖ P_aligned) of given completions (one per prompt).

    Each side scores the same token ids behind its own rendered prompt, one padded forward per batch of
    `batch_size` prompts; the sides go one after the other, so one peft model can be both.
    """
    check_same_vocabulary(base, aligned)
    ranks: list[list[int]] = []
    kls: list[list[float]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        comps = [list(ids) for ids in completions[start : start + batch_size]]
        lengths = [len(ids) for ids in comps]
        if not any(lengths):  # nothing to score (a forward with no target positions is not worth making)
            ranks.extend([] for _ in comps)
            kls.extend([] for _ in comps)
            continue
        rows = [[ids] for ids in comps]
        base_logits, batch = policy_completion_logits(base, chunk, rows)
        aligned_logits = policy_completion_logits(aligned, chunk, rows)[0].to(base_logits.device)
        if base_logits.shape[-1] != aligned_logits.shape[-1]:
            raise ValueError(
                f"base and aligned models have different output sizes ({base_logits.shape[-1]} vs "
                f"{aligned_logits.shape[-1]}): ranks and KL need one vocabulary"
            )
        chunk_ranks = base_rank(base_logits, batch.target_ids).cpu().tolist()
        chunk_kls = next_token_kl(base_logits, aligned_logits).double().cpu().tolist()
        offset = 0  # targets are completion-major and in order: split them back by length
        for n in lengths:
            ranks.append(chunk_ranks[offset : offset + n])
            kls.append(chunk_kls[offset : offset + n])
            offset += n
    return ranks, kls


def token_shift(
    base: Policy,
    aligned: Policy,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 8,
    stop: Sequence[str] = (),
) -> ShiftResult:
    """Decode `aligned` greedily on `prompts` and rank every token under `base` (module docstring).

    `stop` are the aligned side's stop strings (a URIAL prompt's turn marker); `batch_size` is the number of
    prompts per scoring forward (the sampler batches by its own setting).
    """
    check_same_vocabulary(base, aligned)  # before the (long) decoding, not after it
    prompts = list(prompts)
    if not prompts:
        raise ValueError("token_shift needs at least one prompt")
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=tuple(stop))
    decoded = aligned.generate(prompts, params)
    token_ids = [list(per_prompt[0]) for per_prompt in decoded.token_ids]
    ranks, kls = score_shift(base, aligned, prompts, token_ids, batch_size=batch_size)
    texts: dict[int, str] = {}
    for token in {t for ids in token_ids for t in ids}:
        texts[token] = aligned.tokenizer.decode([token])
    return ShiftResult(
        prompts=prompts,
        completions=[per_prompt[0] for per_prompt in decoded.texts],
        token_ids=token_ids,
        token_texts=[[texts[t] for t in ids] for ids in token_ids],
        ranks=ranks,
        kls=kls,
        max_new_tokens=max_new_tokens,
        stop=tuple(stop),
    )


def write_shift(
    result: ShiftResult, output_dir: str | Path, meta: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """shift.json (`meta` — what was compared — first, then `result.to_json()`) and shift.png; their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "shift.json", out / "shift.png"
    payload = {**(meta or {}), **result.to_json()}
    write_json_atomic(json_path, payload)
    plot_shift(png_path, payload)
    return json_path, png_path
