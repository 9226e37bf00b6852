"""The sampler contract shared by every generation backend (see docs/architecture.md, "Sampler").

A `Sampler` turns rendered prompts into `Completions`; trainers only ever see this protocol, never vLLM.
Weights flow one way: after an optimizer step the trainer pushes ``(name, tensor)`` pairs through
`Sampler.load_weights` (Hugging Face parameter names, full unsharded tensors).

Log-probs, when asked for, are sums over the sampled tokens under the *unmodified* model distribution
(temperature 1, no top-p/top-k truncation), so they compare across backends and with the trainer's
`policy.logps`.

Stop strings (`SamplingParams.stop`): a sample ends at the first occurrence, in its decoded text, of any
stop string (the earliest-starting one wins). Both backends apply one rule, `cut_at_stop`: keep the
longest prefix of the generated ids whose decoding (``skip_special_tokens=True``) is a prefix of the
text before that occurrence, i.e. drop the token in which the stop string begins and everything after,
and return ``text = decode(kept ids)``. So the text never holds a stop string, ``text == decode(ids)``
always, and when a stop string begins mid-token the text ends before that token (it can lose the few
characters that token carried before the stop string). A stop-cut completion has no EOS appended (it did
not stop on EOS), and its log-prob is the sum over the kept ids only, exactly the ids a trainer scores.
Samples that end on EOS or `max_new_tokens` before any stop string are unaffected, and an empty
``stop`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

#: batches from which a long loop (sampling, scoring, KL) shows a progress bar with the time left
PROGRESS_MIN_BATCHES = 8


def stop_token_ids(tokenizer, generation_eos: int | Sequence[int] | None) -> list[int]:
    """Ids generation stops on, for every backend: the tokenizer's EOS and the checkpoint's
    generation-config EOS id(s)."""
    stop = {tokenizer.eos_token_id} | set(
        [generation_eos] if isinstance(generation_eos, int) else generation_eos or []
    )
    return sorted(i for i in stop if i is not None)


@dataclass
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 48
    seed: int | None = 0  # None = not reproducible
    logprobs: bool = False  # also return summed log-probs of the sampled tokens
    # Stop strings: a sample ends before the first occurrence of any of them; ids and text are cut by
    # `cut_at_stop` (the token in which it begins is dropped, so text == decode(ids) never holds one).
    stop: tuple[str, ...] = ()


@dataclass
class Completions:
    prompts: list[str]  # P
    texts: list[list[str]]  # P x n, decoded without the EOS token
    token_ids: list[list[list[int]]]  # P x n x T_i, generated ids (ends with EOS when it stopped on EOS;
    # cut by `cut_at_stop` when it stopped on a stop string)
    logprobs: list[list[float]] | None  # P x n, summed log-probs of the sampled tokens, when asked

    def flat_texts(self) -> list[str]:
        """The P*n completions, prompt-major (all samples of prompt 0, then prompt 1, ...)."""
        return [t for texts in self.texts for t in texts]

    def flat_prompts(self) -> list[str]:
        """Each prompt repeated once per sample, aligned with `flat_texts()`."""
        return [p for p, texts in zip(self.prompts, self.texts) for _ in texts]

    def flat_token_ids(self) -> list[list[int]]:
        """The P*n generated id lists, aligned with `flat_texts()`."""
        return [ids for per_prompt in self.token_ids for ids in per_prompt]

    def flat_logprobs(self) -> list[float]:
        """The P*n summed log-probs, aligned with `flat_texts()` (raises when none were asked for)."""
        if self.logprobs is None:
            raise ValueError("these completions were sampled without logprobs=True")
        return [lp for per_prompt in self.logprobs for lp in per_prompt]

    def score(self, reward) -> torch.Tensor:
        """(P, n) float64 rewards: one ``reward.score(prompts, completions)`` call on the flattened pairs."""
        scores = torch.as_tensor(reward.score(self.flat_prompts(), self.flat_texts()), dtype=torch.float64)
        expected = sum(len(texts) for texts in self.texts)
        if scores.shape != (expected,):
            raise ValueError(f"reward.score returned shape {tuple(scores.shape)}, expected ({expected},)")
        return scores.reshape(len(self.prompts), -1)

    @property
    def num_tokens(self) -> int:
        """Generated tokens in total (EOS included where generated): the numerator of tokens/s."""
        return sum(len(ids) for per_prompt in self.token_ids for ids in per_prompt)


@runtime_checkable
class Sampler(Protocol):
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Completions: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None: ...


def prompt_token_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt ids by the library-wide rule, ``tokenizer(prompt)["input_ids"]`` (the tokenizer's own
    special-token policy, as TRL). Both backends call this so they see identical inputs."""
    return [list(tokenizer(p)["input_ids"]) for p in prompts]


def cut_at_stop(token_ids: Sequence[int], tokenizer, stop: Sequence[str]) -> tuple[list[int], str]:
    """The one stop-string rule of every backend: ``(kept ids, text)`` of one generated sample.

    ``text = tokenizer.decode(ids, skip_special_tokens=True)``. When no stop string occurs in the text of
    all of `token_ids`, both are returned unchanged. Otherwise, with ``pos`` the start of the earliest
    occurrence of any stop string, the kept ids are the longest prefix whose decoding is a prefix of
    ``text[:pos]`` (the token in which the stop string begins is dropped, with everything after it), and
    the text is their decoding: it never holds a stop string and may end a few characters before ``pos``
    when the stop string begins mid-token.
    """
    ids = list(token_ids)
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    if not hits:
        return ids, text
    head = text[: min(hits)]
    kept, kept_text = 0, ""
    for k in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:k], skip_special_tokens=True)
        if len(prefix) > len(head):
            break  # this token reaches the stop string: it and everything after are dropped
        if head.startswith(prefix):  # (a prefix ending mid-character decodes to U+FFFD: not a prefix)
            kept, kept_text = k, prefix
    return ids[:kept], kept_text
