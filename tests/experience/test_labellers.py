"""Labellers: the registry and its checks, the implicit reward against a naive per-sample loop with π ≠ π_ref
(a frozen copy and a LoRA adapter as the reference), and the calibrated reward against quantiles worked out
by hand."""

from __future__ import annotations

import copy

import pytest
import torch

from alignment.experience.labellers import (
    LABELLERS,
    CalibratedRewardLabeller,
    LabellerContext,
    build_labeller,
    empirical_cdf,
)
from alignment.experience.samples import Samples
from alignment.models import load_causal_lm, load_tokenizer
from alignment.sampling.base import Completions, SamplingParams, prompt_token_ids
from alignment.sampling.hf import TransformersSampler
from alignment.toy.corpus import sample_prompts

BETA = 0.3


def test_registry_names_and_what_each_needs():
    assert LABELLERS.names() == ["calibrated", "implicit", "reward"]
    assert [LABELLERS.get(n).needs_reward for n in LABELLERS.names()] == [True, False, True]
    with pytest.raises(KeyError, match="did you mean 'implicit'"):
        build_labeller("implicitt", LabellerContext(tokenizer=None))


@pytest.mark.parametrize(
    "name, missing", [("reward", "a reward"), ("calibrated", "a reward"), ("implicit", "the policy")]
)
def test_missing_inputs_are_named(name, missing):
    with pytest.raises(ValueError, match=f"labeller '{name}' needs {missing}"):
        build_labeller(name, LabellerContext(tokenizer=None))


def test_reward_labeller_scores_every_sample(tiny_tokenizer, table_sampler, number_reward):
    sampler = table_sampler({"a": ["1", "-2"], "b": ["0.5", "3"]}, tiny_tokenizer)
    completions = sampler.generate(["a", "b"], SamplingParams(n=2))
    labeller = build_labeller("reward", LabellerContext(tokenizer=tiny_tokenizer, reward=number_reward))
    scores = labeller(Samples(prompt_token_ids(tiny_tokenizer, ["a", "b"]), completions))
    assert scores.dtype == torch.float64 and scores.tolist() == [[1.0, -2.0], [0.5, 3.0]]


@pytest.fixture(scope="module")
def toy():
    """toy-base as π_ref, a perturbed copy as π, and k = 3 samples of 4 toy prompts (varied lengths)."""
    tokenizer = load_tokenizer("toy-base")
    reference = load_causal_lm("toy-base").eval()
    policy = copy.deepcopy(reference)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    prompts = sample_prompts(4, seed=0)
    completions = TransformersSampler(reference, tokenizer).generate(
        prompts, SamplingParams(n=3, max_new_tokens=12, seed=0)
    )
    return tokenizer, policy, reference, Samples(prompt_token_ids(tokenizer, prompts), completions)


def naive_implicit(policy, reference, samples: Samples, completion_logps) -> torch.Tensor:
    """β·(log π − log π_ref), one unpadded forward per (prompt, sample)."""
    per = samples.completions.token_ids
    prompt_ids = [ids for ids, samples_of in zip(samples.prompt_ids, per) for _ in samples_of]
    flat = [ids for samples_of in per for ids in samples_of]
    policy_logps = torch.tensor(completion_logps(policy, prompt_ids, flat), dtype=torch.float64)
    reference_logps = torch.tensor(completion_logps(reference, prompt_ids, flat), dtype=torch.float64)
    diff = policy_logps - reference_logps
    return (BETA * diff).reshape(len(per), -1)


def test_implicit_reward_equals_a_naive_loop(toy, completion_logps):
    tokenizer, policy, reference, samples = toy
    ctx = LabellerContext(tokenizer=tokenizer, policy=policy, reference=reference, beta=BETA, batch_size=3)
    got = build_labeller("implicit", ctx)(samples)
    want = naive_implicit(policy, reference, samples, completion_logps)
    assert got.shape == (4, 3) and got.dtype == torch.float64
    assert want.abs().min() > 1e-3  # π ≠ π_ref on every sample
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    same = build_labeller(
        "implicit", LabellerContext(tokenizer=tokenizer, policy=reference, reference=reference)
    )
    assert same(samples).abs().max() == 0  # a model against itself: no implicit reward


@pytest.fixture(scope="module")
def lora_policy(toy):
    """toy-base with a random (non-identity) LoRA adapter: the adapter off is exactly toy-base."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(load_causal_lm("toy-base"), config).eval()


def test_implicit_reward_with_the_adapter_off_as_reference(toy, lora_policy, completion_logps):
    tokenizer, _, reference, samples = toy
    ctx = LabellerContext(tokenizer=tokenizer, policy=lora_policy, reference_is_adapter=True, beta=BETA)
    want = naive_implicit(lora_policy, reference, samples, completion_logps)
    assert want.abs().min() > 1e-3
    torch.testing.assert_close(build_labeller("implicit", ctx)(samples), want, rtol=0, atol=1e-4)


def test_empirical_cdf_counts_ties_half():
    """Reference rewards (1, 2, 2, 3): 2 has one below and two ties -> (1 + 2·½)/4; 3 -> (3 + ½)/4."""
    reference = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    got = empirical_cdf(torch.tensor([[2.0, 0.0, 5.0, 3.0, 1.0]]), reference)
    assert got.tolist() == [[0.5, 0.0, 1.0, 0.875, 0.125]]


def test_calibrated_reward_is_the_quantile_among_its_prompts_reference_samples(
    tiny_tokenizer, table_sampler, number_reward
):
    reference = table_sampler(
        {"a": ["1", "2", "2", "3", "9"], "b": ["0", "0", "0", "0", "9"]}, tiny_tokenizer
    )
    labeller = CalibratedRewardLabeller(number_reward, reference, SamplingParams(n=4))
    labeller.prepare(["a", "b", "a"])
    assert reference.calls == [(["a", "b"], 4)]  # once, unique prompts, m samples each
    completions = Completions(["b", "a"], [["0", "1", "-1"], ["2", "0", "3.5"]], [[[1]] * 3] * 2, None)
    got = labeller(Samples([[0], [0]], completions))
    assert got.tolist() == [[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]]
    with pytest.raises(RuntimeError, match="no reference samples for prompt 'c'"):
        labeller(Samples([[0]], Completions(["c"], [["1"]], [[[1]]], None)))


def test_calibrated_from_context_samples_the_reference_with_its_own_seed(toy, lora_policy):
    """m samples per prompt with the run's settings and seed + 1, from the frozen copy — or, identically,
    from the policy with its adapter switched off."""

    class TextLength:
        def score(self, prompts, completions):
            return torch.tensor([float(len(c)) for c in completions], dtype=torch.float64)

    tokenizer, policy, reference, samples = toy
    params = SamplingParams(n=3, max_new_tokens=12, seed=5)
    common = dict(tokenizer=tokenizer, reward=TextLength(), sampling_params=params, reference_samples=6)
    copy_ref = build_labeller("calibrated", LabellerContext(policy=policy, reference=reference, **common))
    adapter_ref = build_labeller(
        "calibrated", LabellerContext(policy=lora_policy, reference_is_adapter=True, **common)
    )
    assert copy_ref.params == SamplingParams(n=6, max_new_tokens=12, seed=6)
    prompts = samples.completions.prompts
    copy_ref.prepare(prompts)
    adapter_ref.prepare(prompts)
    want = TransformersSampler(reference, tokenizer, batch_size=16).generate(prompts, copy_ref.params)
    want = want.score(TextLength())
    for p, row in zip(prompts, want):
        assert torch.equal(copy_ref.reference_rewards[p], row)
        assert torch.equal(adapter_ref.reference_rewards[p], row)
    scores = copy_ref(samples)
    assert scores.shape == (4, 3) and ((scores * 12) == (scores * 12).round()).all()  # multiples of 1/2m


def test_calibrated_rollouts_through_the_runs_engine_use_the_references_weights(
    vllm_sampler, tiny_model_dir, tiny_tokenizer, prompts_for, tmp_path
):
    """With a vLLM run (`LabellerContext.engine`), the m reference samples come from the engine, which is given
    the reference's weights first (here a perturbed copy, unlike the checkpoint the engine started from); the
    rollout cache keys them apart from transformers-drawn ones."""
    from alignment.sampling.vllm import model_state_for_sync

    class TextLength:
        def score(self, prompts, completions):
            return torch.tensor([float(len(c)) for c in completions], dtype=torch.float64)

    reference = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
    params = SamplingParams(n=2, max_new_tokens=10, seed=5)
    context = dict(tokenizer=tiny_tokenizer, reward=TextLength(), policy=reference, reference=reference,
                   sampling_params=params, reference_samples=4, cache_dir=str(tmp_path))  # fmt: skip
    through_engine = build_labeller("calibrated", LabellerContext(engine=vllm_sampler, **context))
    assert through_engine.reference_sampler is vllm_sampler
    prompts = prompts_for(5)
    through_engine.prepare(prompts)
    vllm_sampler.load_weights(model_state_for_sync(load_causal_lm(str(tiny_model_dir))))  # the checkpoint's
    unperturbed = vllm_sampler.generate(prompts, through_engine.params).score(TextLength())
    vllm_sampler.load_weights(model_state_for_sync(reference))
    want = vllm_sampler.generate(prompts, through_engine.params).score(TextLength())
    assert not torch.equal(want, unperturbed)
    for p, row in zip(prompts, want):
        assert torch.equal(through_engine.reference_rewards[p], row)
    plain = build_labeller("calibrated", LabellerContext(**context))
    assert isinstance(plain.reference_sampler, TransformersSampler)
    assert plain.cache.path(prompts) != through_engine.cache.path(prompts)
