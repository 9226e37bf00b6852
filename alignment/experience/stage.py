"""`make_experience`: sample k completions per prompt, label them, keep what the selector picks."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from alignment.experience.labellers import Labeller
from alignment.experience.samples import Experience, Samples
from alignment.experience.selectors import Selector
from alignment.sampling.base import Sampler, SamplingParams, prompt_token_ids


def make_experience(
    prompts: Sequence[str],
    *,
    sampler: Sampler,
    labeller: Labeller,
    select: Selector,
    tokenizer,
    params: SamplingParams,
) -> Experience:
    """One pass of the stage on a micro-batch of prompts; the sampler's log-probs (``params.logprobs``)
    become the `behaviour_logps` column."""
    started = time.perf_counter()
    completions = sampler.generate(list(prompts), params)
    samples = Samples(prompt_token_ids(tokenizer, completions.prompts), completions)
    sampled = time.perf_counter()
    scores = labeller(samples)
    scored = time.perf_counter()
    selection = select(scores)
    logprobs = completions.logprobs
    return Experience(
        prompt_ids=[samples.prompt_ids[int(r)] for r in selection.rows],
        rows=selection.rows,
        completion_ids=[
            [completions.token_ids[int(r)][int(j)] for j in idx]
            for r, idx in zip(selection.rows, selection.index, strict=True)
        ],
        scores=selection.gather(scores),
        behaviour_logps=None
        if logprobs is None
        else selection.gather(torch.tensor(logprobs, dtype=torch.float64)),
        all_scores=scores,
        lengths=torch.tensor([[len(ids) for ids in per] for per in completions.token_ids]),
        skipped=selection.skipped,
        seconds={"sample": sampled - started, "score": scored - sampled},
    )
