"""A shared prompt prefix encoded once: the same completion logits, the same greedy samples and the same
log-probs as the full rows (to float rounding), and the plain path untouched where rows share no prefix."""

from __future__ import annotations

import pytest
import torch

from alignment.eval.gold import kl_on_samples
from alignment.eval.policy import make_policy
from alignment.policy import prefix as prefix_module
from alignment.policy.batching import build_padded_batch
from alignment.policy.logps import completion_logits
from alignment.policy.prefix import (
    MIN_SHARED_PREFIX,
    build_prefixed_batch,
    completion_logits_after_prefix,
    shared_prefix_length,
)
from alignment.sampling import SamplingParams
from alignment.sampling.hf import TransformersSampler

PREAMBLE = " ".join(["the cat sat on the mat and the dog ran to the park"] * 4) + "\n"


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    # each row keeps at least its last token (its logits start the completion)
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert shared_prefix_length([[5, 2], [1, 2]]) == 0
    assert shared_prefix_length([]) == 0


def test_no_prefixed_batch_below_the_minimum():
    rows = [[7] * (MIN_SHARED_PREFIX - 1) + [1, 2], [7] * (MIN_SHARED_PREFIX - 1) + [3]]
    assert build_prefixed_batch(rows, [[[4]], [[5]]], pad_token_id=0) is None
    rows = [[7] * MIN_SHARED_PREFIX + [1, 2], [7] * MIN_SHARED_PREFIX + [3]]
    prefix, batch = build_prefixed_batch(rows, [[[4, 6]], [[5]]], pad_token_id=0)
    assert prefix == [7] * MIN_SHARED_PREFIX
    assert batch.input_ids.tolist() == [[1, 2, 4, 6], [3, 5, 0, 0]]
    assert batch.target_ids.tolist() == [4, 6, 5]


def test_completion_logits_after_prefix_match_full_rows(tiny_model, tiny_tokenizer, prompts_for):
    prompts = [PREAMBLE + p for p in prompts_for(5)]
    prompt_ids = [tiny_tokenizer(p)["input_ids"] for p in prompts]
    g = torch.Generator().manual_seed(0)
    completions = [[torch.randint(5, 300, (int(n),), generator=g).tolist() for n in (3, 9)] for _ in prompts]
    prefixed = build_prefixed_batch(prompt_ids, completions, pad_token_id=tiny_tokenizer.pad_token_id)
    assert prefixed is not None and len(prefixed[0]) >= MIN_SHARED_PREFIX
    full = build_padded_batch(prompt_ids, completions, pad_token_id=tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        expected = completion_logits(tiny_model, full)
    got = completion_logits_after_prefix(tiny_model, *prefixed)
    assert torch.equal(prefixed[1].target_ids, full.target_ids)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_sampling_behind_a_shared_prefix_matches_full_rows(
    tiny_model, tiny_tokenizer, prompts_for, monkeypatch
):
    """Greedy samples (and their log-probs) behind a long shared prefix, with prompts of different lengths in one
    batch, are those of the plain left-padded path."""
    prompts = [PREAMBLE + p for p in prompts_for(6)]
    assert len({len(tiny_tokenizer(p)["input_ids"]) for p in prompts}) > 1  # padding between prefix and query
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12, logprobs=True)
    sampler = TransformersSampler(tiny_model, tiny_tokenizer, batch_size=4)
    calls = []
    original = prefix_module.prefix_cache

    def counting(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr("alignment.sampling.hf.prefix_cache", counting)
    shared = sampler.generate(prompts, params)
    assert calls == [4, 2]  # one prefix pass per generate() batch
    monkeypatch.setattr(prefix_module, "MIN_SHARED_PREFIX", 10_000)  # the plain path
    plain = sampler.generate(prompts, params)
    assert shared.token_ids == plain.token_ids
    assert shared.flat_logprobs() == pytest.approx(plain.flat_logprobs(), abs=1e-4)


def test_kl_behind_a_template_uses_the_prefix_and_matches(
    tiny_model, tiny_tokenizer, tiny_model_dir, prompts_for, monkeypatch
):
    """The evaluation's KL of a templated policy (π ≠ π_ref: the reference is untemplated) is that of full rows."""
    template = PREAMBLE + "{prompt}"
    policy = make_policy(tiny_model, tiny_tokenizer, template=template)
    reference = make_policy(tiny_model, tiny_tokenizer)
    samples = policy.generate(prompts_for(4), SamplingParams(n=2, max_new_tokens=10, seed=3))
    kl, ratio, _ = kl_on_samples(policy, reference, samples)
    monkeypatch.setattr(prefix_module, "MIN_SHARED_PREFIX", 10_000)
    plain_kl, plain_ratio, _ = kl_on_samples(policy, reference, samples)
    assert float(plain_kl.abs().min()) > 1e-3  # the template changes the distributions
    assert torch.allclose(kl, plain_kl, atol=1e-5)
    assert torch.allclose(ratio, plain_ratio, atol=1e-5)
