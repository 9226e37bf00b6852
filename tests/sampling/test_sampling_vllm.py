"""VLLMSampler against the transformers backend and a trained policy, on one shared engine.

Weight sync is checked by log-prob equality: the engine's log π(y|x) of fixed completions (prefill of
prompt+completion with prompt_logprobs) must equal the trained policy's forward pass, and be far from the
initial model's.
"""

import logging
from types import SimpleNamespace

import pytest
import torch

from alignment.sampling import SamplingParams, build_sampler, model_state_for_sync
from alignment.sampling.base import prompt_token_ids
from alignment.sampling.hf import TransformersSampler

pytestmark = pytest.mark.vllm

SYNC_ATOL = 1e-3  # engine vs trained policy, summed over <= 20 tokens (observed ~1e-6)


def lm_sgd_steps(model, tokenizer, texts, *, steps=3, lr=0.5):
    """A few plain SGD steps of next-token loss (weights change measurably; no optimizer state)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        batch = texts[step * 4 : (step + 1) * 4]
        ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in batch]
        width = max(map(len, ids))
        x = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i in ids])
        mask = (x != tokenizer.pad_token_id).long()
        model(input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture
def fixed_pairs(vllm_sampler, prompts_for):
    """(prompt ids, completion ids): 12 seeded samples from the initial engine, then frozen."""
    c = vllm_sampler.generate(prompts_for(6, seed=7), SamplingParams(n=2, max_new_tokens=20, seed=11))
    return prompt_token_ids(vllm_sampler.tokenizer, c.flat_prompts()), c.flat_token_ids()


def as64(xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_greedy_matches_transformers(vllm_sampler, tiny_model, tiny_tokenizer, prompts_for):
    prompts = prompts_for(12, seed=3)
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=24, logprobs=True)
    v = vllm_sampler.generate(prompts, params)
    h = TransformersSampler(tiny_model, tiny_tokenizer).generate(prompts, params)
    assert v.token_ids == h.token_ids
    assert v.texts == h.texts
    torch.testing.assert_close(as64(v.flat_logprobs()), as64(h.flat_logprobs()), rtol=0, atol=1e-4)


def test_sampled_logprobs_are_untempered_and_seeded(vllm_sampler, tiny_model, prompts_for, completion_logps):
    prompts = prompts_for(6, seed=4)
    params = SamplingParams(
        n=3, temperature=0.6, top_p=0.9, top_k=10, max_new_tokens=20, logprobs=True, seed=5
    )
    c = vllm_sampler.generate(prompts, params)
    assert [len(t) for t in c.token_ids] == [3] * 6
    assert vllm_sampler.generate(prompts, params).token_ids == c.token_ids
    twice = vllm_sampler.generate(
        [prompts[0]] * 2, params
    )  # a seed per prompt position, not one shared stream
    assert twice.token_ids[0] != twice.token_ids[1]
    want = completion_logps(
        tiny_model, prompt_token_ids(vllm_sampler.tokenizer, c.flat_prompts()), c.flat_token_ids()
    )
    torch.testing.assert_close(as64(c.flat_logprobs()), as64(want), rtol=0, atol=1e-4)


def check_engine_follows(policy, initial, sampler, pairs, completion_logps):
    prompt_ids, completion_ids = pairs
    before = as64(completion_logps(initial, prompt_ids, completion_ids))
    want = as64(completion_logps(policy, prompt_ids, completion_ids))
    assert (want - before).abs().max() > 100 * SYNC_ATOL  # training changed the model measurably
    sampler.load_weights(model_state_for_sync(policy))
    got = as64(sampler.sequence_logprobs(prompt_ids, completion_ids))
    torch.testing.assert_close(got, want, rtol=0, atol=SYNC_ATOL)
    assert (got - before).abs().max() > 100 * SYNC_ATOL
    # and what the engine now samples is scored by the trained policy, to the same tolerance
    c = sampler.generate(
        [sampler.tokenizer.decode(p, skip_special_tokens=True) for p in prompt_ids[:6]],
        SamplingParams(n=2, max_new_tokens=20, logprobs=True, seed=1),
    )
    scored = completion_logps(
        policy, prompt_token_ids(sampler.tokenizer, c.flat_prompts()), c.flat_token_ids()
    )
    torch.testing.assert_close(as64(c.flat_logprobs()), as64(scored), rtol=0, atol=SYNC_ATOL)


def test_weight_sync_full_model(
    vllm_sampler, tiny_model_dir, tiny_tokenizer, fixed_pairs, completion_logps, prompts_for
):
    from transformers import AutoModelForCausalLM

    from alignment.sampling.vllm import RELOAD_LOGGER

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lm_sgd_steps(policy, tiny_tokenizer, prompts_for(12, seed=99))
    seen: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())
    logging.getLogger(RELOAD_LOGGER).addHandler(handler)
    try:
        check_engine_follows(policy, initial, vllm_sampler, fixed_pairs, completion_logps)
    finally:
        logging.getLogger(RELOAD_LOGGER).removeHandler(handler)
    assert not [m for m in seen if "RotaryEmbedding: Failed to load weights" in m]  # known harmless: filtered


def test_weight_sync_lora_policy(
    vllm_sampler, tiny_model_dir, tiny_tokenizer, fixed_pairs, completion_logps, prompts_for
):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    policy = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    lm_sgd_steps(policy, tiny_tokenizer, prompts_for(12, seed=99), lr=2.0)
    check_engine_follows(policy, initial, vllm_sampler, fixed_pairs, completion_logps)
    assert any("lora_B" in n for n, _ in policy.named_parameters())  # still an unmerged peft model


@pytest.mark.parametrize(
    "knobs",
    [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9, top_k=20)],
    ids=["plain", "tempered-topp-topk"],
)
def test_backends_sample_the_same_distribution(vllm_sampler, tiny_model, tiny_tokenizer, prompts_for, knobs):
    """64 prompts x 8 samples per backend: the per-prompt mean of log π(y|x) and of the length must agree.
    Units are prompts (samples of one prompt are not independent of its difficulty): paired differences
    d_p = mean_hf_p - mean_vllm_p, |mean(d)| < 4 * std(d)/sqrt(64)."""
    prompts = prompts_for(64, seed=21)
    params = SamplingParams(n=8, max_new_tokens=24, logprobs=True, seed=0, **knobs)
    h = TransformersSampler(tiny_model, tiny_tokenizer).generate(prompts, params)
    v = vllm_sampler.generate(prompts, params)
    for stat in ("logprob", "length"):
        if stat == "logprob":
            a, b = as64(h.logprobs), as64(v.logprobs)
        else:
            a = as64([[len(s) for s in per] for per in h.token_ids])
            b = as64([[len(s) for s in per] for per in v.token_ids])
        d = a.mean(1) - b.mean(1)
        se = d.std() / len(d) ** 0.5
        assert d.mean().abs() < 4 * se, (
            f"{stat}: hf {a.mean():.3f} vs vllm {b.mean():.3f}, diff {d.mean():.3f}, se {se:.3f}"
        )
        assert se > 0


def test_factory_reuses_the_process_engine(vllm_sampler, tiny_model, tiny_tokenizer, tiny_model_dir):
    cfg = SimpleNamespace(
        backend="vllm",
        seed=0,
        vllm=SimpleNamespace(
            gpu_memory_utilization=0.3, max_model_len=256, enforce_eager=True, kv_cache_space_gib=1.0
        ),
    )
    sampler = build_sampler(cfg, tiny_model, tiny_tokenizer, tiny_model_dir)
    assert sampler.llm is vllm_sampler.llm


def test_engine_caches_shared_prefixes(vllm_sampler):
    """An in-context prefix shared by every prompt (URIAL) is prefilled once: the engine's prefix cache is on."""
    assert vllm_sampler.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching is True


def test_seeded_sampling_of_long_prompts_beyond_one_scheduler_step(vllm_sampler, tiny_tokenizer, prompts_for):
    """An in-context prefix makes prompts long: 96 prompts of ~200 tokens, 2 seeded samples each, are more
    prefill tokens than one scheduler step takes. With chunked prefill vLLM rewinds the generator of a
    request whose prefill was split, which CPU generators refuse ("CPU Generator does not use offset"); the
    engine is built with whole prefills on CPU. The samples stay reproducible from the seed."""
    prefix = " ".join(["the cat sat on the mat and looked at the red dog."] * 7)
    prompts = [f"{prefix} {p}" for p in prompts_for(96, seed=4)]
    assert min(len(ids) for ids in prompt_token_ids(tiny_tokenizer, prompts)) > 150
    params = SamplingParams(n=2, max_new_tokens=8, seed=5)
    first, again = vllm_sampler.generate(prompts, params), vllm_sampler.generate(prompts, params)
    assert first.token_ids == again.token_ids and len(first.token_ids) == 96


def test_engine_start_up_leaves_the_global_generators_as_they_were():
    """vLLM's worker reseeds random/numpy/torch when an engine starts; one started mid-training (a periodic
    evaluation) must not change the draws training makes next."""
    import random

    import numpy as np

    from alignment.sampling.vllm import _rng_preserved

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    want = draws()
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    with _rng_preserved():
        random.seed(0), np.random.seed(0), torch.manual_seed(0)  # what the worker does
    assert draws() == want
