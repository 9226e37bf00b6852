"""Summed completion log-probs: packed = padded = a naive per-sequence loop, and the cache is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.policy.batching import COMPLETIONS, REF_LOGPS, build_packed_batch, build_padded_batch
from alignment.policy.logps import sequence_logps
from alignment.policy.reference import add_reference_logps

PAD = 0


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(config).eval().double()


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(1)

    def rand(n: int) -> list[int]:
        return torch.randint(1, 50, (n,), generator=g).tolist()

    prompts = [rand(3), rand(7), rand(5)]
    completions = [[rand(4), rand(9)], [rand(1), rand(6)], [rand(8), rand(2)]]
    return prompts, completions


def test_padded_equals_naive(model, examples, completion_logps):
    prompts, completions = examples
    with torch.no_grad():
        got = sequence_logps(model, build_padded_batch(prompts, completions, pad_token_id=PAD))
    want = torch.tensor([completion_logps(model, [p] * len(cs), cs) for p, cs in zip(prompts, completions)])
    assert got.shape == (3, 2)
    torch.testing.assert_close(
        got.double(), want.double(), rtol=0, atol=1e-5
    )  # rotary tables are float32 even in a float64 model


@pytest.mark.parametrize("pack_length", [10_000, 20])
def test_packed_equals_padded(model, examples, pack_length):
    """One packed row (logits_to_keep path) and several rows (gather path) both match padding."""
    prompts, completions = examples
    packed = build_packed_batch(prompts, completions, pad_token_id=PAD, pack_length=pack_length)
    assert packed.attention_mask is None and packed.input_ids.shape[0] == (1 if pack_length > 100 else 4)
    with torch.no_grad():
        got = sequence_logps(model, packed)
        want = sequence_logps(model, build_padded_batch(prompts, completions, pad_token_id=PAD))
    torch.testing.assert_close(
        got, want, rtol=0, atol=1e-5
    )  # rotary tables are float32 even in a float64 model


def test_completion_lengths(examples):
    prompts, completions = examples
    batch = build_packed_batch(prompts, completions, pad_token_id=PAD, pack_length=64)
    assert batch.completion_lengths().tolist() == [[4, 9], [1, 6], [8, 2]]


def test_gradients_flow_only_from_completions(model, examples):
    """Changing a prompt token's embedding row gradient is nonzero; the loss never reads prompt targets."""
    prompts, completions = examples
    batch = build_packed_batch(prompts, completions, pad_token_id=PAD, pack_length=10_000)
    assert batch.target_ids.numel() == sum(len(c) for cs in completions for c in cs)


def test_reference_cache_reused_and_exact(model, examples, tmp_path, completion_logps):
    prompts, completions = examples
    ds = Dataset.from_dict({"prompt_input_ids": prompts, COMPLETIONS: completions})
    first = add_reference_logps(ds, model, pad_token_id=PAD, cache_dir=tmp_path, batch_size=2)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.full((3, 2), 7.0))  # a tampered cache proves the second call reads it
    second = add_reference_logps(ds, model, pad_token_id=PAD, cache_dir=tmp_path)
    assert np.allclose(second[REF_LOGPS], 7.0)
    want = [completion_logps(model, [p] * len(cs), cs) for p, cs in zip(prompts, completions)]
    np.testing.assert_allclose(
        np.asarray(first[REF_LOGPS]), np.asarray(want), rtol=0, atol=1e-5
    )  # rotary tables are float32 even in a float64 model


def test_passes_without_gradients_project_only_the_targets_bit_for_bit(model, examples, monkeypatch):
    """Several rows without gradients: the final hidden states at the targets go through the head, and the
    numbers equal the model's own logits exactly; with gradients the full projection runs."""
    from alignment.policy import logps as module

    prompts, completions = examples
    batch = build_padded_batch(prompts, completions, pad_token_id=PAD)
    with torch.no_grad():
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        want = full.reshape(-1, full.shape[-1])[batch.target_positions]
        assert torch.equal(
            module.completion_logits(model, batch), want
        )  # first call: checked against the full
        assert module._EXACT[model] is True
        kept = []
        forward = type(model).forward
        monkeypatch.setattr(
            type(model),
            "forward",
            lambda self, **kw: kept.append(kw.get("logits_to_keep")) or forward(self, **kw),
        )
        assert torch.equal(module.completion_logits(model, batch), want)
    assert kept == [1]  # one forward, one position's logits: the rest is the gather
    kept.clear()
    module.completion_logits(model, batch)  # with gradients: every position, as before
    assert kept == [None]
