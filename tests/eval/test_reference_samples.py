"""The reference's evaluation samples are drawn once per (reference weights, prompts, settings) and reused:
a second evaluation gives the same result without sampling the reference; another reference, another seed or
a template draws anew; an adapter-off reference and unseeded sampling are never cached."""

from __future__ import annotations

import pytest
import torch

from alignment.eval.gold import EvalSettings, eval_payload, evaluate
from alignment.eval.policy import make_policy
from alignment.eval.reference_samples import cache_path, reference_samples
from alignment.models import load_causal_lm
from alignment.rewards.base import FunctionReward
from alignment.sampling import SamplingParams

LENGTH = FunctionReward(lambda prompts, texts: [float(len(t)) for t in texts], "length")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNMENT_EVAL_REFERENCE_CACHE", str(tmp_path / "eval-reference"))
    return tmp_path / "eval-reference"


def counting(policy):
    calls = []
    original = policy.generate

    def generate(prompts, params):
        calls.append(len(prompts))
        return original(prompts, params)

    policy.generate = generate
    return calls


def test_second_evaluation_loads_the_reference_samples(cache, tiny_model_dir, tiny_tokenizer, prompts_for):
    policy_model, reference_model = load_causal_lm(str(tiny_model_dir)), load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        for p in policy_model.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(0)))
    settings = EvalSettings(num_prompts=5, samples_per_prompt=3, max_new_tokens=10, seed=3)
    prompts = prompts_for(5)
    results = []
    for _ in range(2):
        reference = make_policy(reference_model, tiny_tokenizer)
        calls = counting(reference)
        results.append((eval_payload(evaluate(make_policy(policy_model, tiny_tokenizer), reference, prompts,
                                              LENGTH, settings)), calls))  # fmt: skip
    (first, first_calls), (second, second_calls) = results
    assert first_calls == [5] and second_calls == []  # the second evaluation did not sample the reference
    assert first == second  # and came to exactly the same numbers
    assert len(list(cache.glob("*.json"))) == 1


def test_key_follows_weights_seed_and_template(cache, tiny_model_dir, tiny_tokenizer, prompts_for):
    model = load_causal_lm(str(tiny_model_dir))
    params = SamplingParams(n=2, max_new_tokens=8, seed=1)
    prompts = prompts_for(3)
    plain = cache_path(make_policy(model, tiny_tokenizer), prompts, params)
    assert plain == cache_path(make_policy(model, tiny_tokenizer), prompts, params)
    assert plain != cache_path(
        make_policy(model, tiny_tokenizer), prompts, SamplingParams(n=2, max_new_tokens=8, seed=2)
    )
    assert plain != cache_path(make_policy(model, tiny_tokenizer, template="Q: {prompt}"), prompts, params)
    assert plain != cache_path(make_policy(model, tiny_tokenizer), prompts[:2], params)
    other = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert plain != cache_path(make_policy(other, tiny_tokenizer), prompts, params)
    assert cache_path(make_policy(model, tiny_tokenizer), prompts, SamplingParams(seed=None)) is None
    assert cache_path(make_policy(model, tiny_tokenizer, adapter_disabled=True), prompts, params) is None


def test_unwritable_cache_still_returns_the_samples(
    tmp_path, monkeypatch, tiny_model_dir, tiny_tokenizer, prompts_for
):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ALIGNMENT_EVAL_REFERENCE_CACHE", str(blocker / "eval-reference"))
    policy = make_policy(load_causal_lm(str(tiny_model_dir)), tiny_tokenizer)
    params = SamplingParams(n=2, max_new_tokens=8, seed=1)
    out = reference_samples(policy, prompts_for(2), params)
    assert out.token_ids == policy.generate(prompts_for(2), params).token_ids
