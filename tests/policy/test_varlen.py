"""`varlen_sdpa` attention: per-sequence causal attention on a one-row pack gives the same log-probs and
gradients as sdpa's block-diagonal mask and as a loop over single sequences, with grouped-query attention
too; without boundaries (padded batches, left-padded generation) it is sdpa."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.policy.batching import COMPLETIONS, build_packed_batch, build_padded_batch
from alignment.policy.logps import sequence_logps
from alignment.policy.reference import compute_reference_logps
from alignment.policy.varlen import NAME, register, uses_varlen

PAD = 0


def pair_of_models(kv_heads: int):
    """The same weights under sdpa and under varlen_sdpa (float64, so differences are the kernels')."""
    register()
    config = dict(
        vocab_size=60, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=256, pad_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(0)
    sdpa = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa")).double()
    varlen = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=NAME)).double()
    varlen.load_state_dict(sdpa.state_dict())
    return sdpa, varlen


@pytest.fixture(scope="module")
def examples():
    g = torch.Generator().manual_seed(3)

    def rand(n: int) -> list[int]:
        return torch.randint(1, 60, (n,), generator=g).tolist()

    prompts = [rand(5), rand(11), rand(2), rand(30)]
    completions = [[rand(7), rand(3)], [rand(12), rand(1)], [rand(20), rand(9)], [rand(4), rand(16)]]
    return prompts, completions


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_one_row_pack_matches_sdpa_and_a_per_sequence_loop(examples, kv_heads, completion_logps, monkeypatch):
    from transformers import AttentionInterface

    from alignment.policy import varlen as kernel

    prompts, completions = examples
    sdpa, varlen = pair_of_models(kv_heads)
    bounded = []  # the kernel saw the boundaries, so it attended per sequence (not through a mask)

    def spy(*args, **kwargs):
        bounded.append(kwargs.get("cu_seq_lens_q") is not None)
        return kernel.varlen_sdpa_attention(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, NAME, spy)
    assert uses_varlen(varlen) and not uses_varlen(sdpa)
    packed = build_packed_batch(prompts, completions, pad_token_id=PAD, pack_length=None)
    assert packed.input_ids.shape[0] == 1
    assert packed.cu_seq_lens.tolist()[-1] == packed.input_ids.shape[1]

    got = sequence_logps(varlen, packed)
    assert bounded == [True, True]  # both layers
    want = sequence_logps(sdpa, packed)  # sdpa: the block-diagonal mask from the restarting position ids
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # rotary tables are float32 in a float64 model
    loop = torch.tensor([completion_logps(sdpa, [p] * len(cs), cs) for p, cs in zip(prompts, completions)])
    torch.testing.assert_close(got.detach(), loop.to(got.dtype), rtol=0, atol=1e-5)

    got.sum().backward()
    want.sum().backward()
    for (name, a), b in zip(varlen.named_parameters(), sdpa.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_without_boundaries_it_is_sdpa_with_its_padding_mask(examples):
    prompts, completions = examples
    sdpa, varlen = pair_of_models(4)
    padded = build_padded_batch(prompts, completions, pad_token_id=PAD)
    with torch.no_grad():
        torch.testing.assert_close(
            sequence_logps(varlen, padded), sequence_logps(sdpa, padded), rtol=0, atol=0
        )
        left = torch.tensor([[PAD, PAD, 5, 6, 7], [1, 2, 3, 4, 5]])  # left padding, as generation pads
        mask = (left != PAD).long()
        a = varlen(input_ids=left, attention_mask=mask).logits
        b = sdpa(input_ids=left, attention_mask=mask).logits
    torch.testing.assert_close(a[:, 2:], b[:, 2:], rtol=0, atol=0)


def test_the_reference_pass_packs_under_varlen_and_agrees_with_sdpa(examples):
    prompts, completions = examples
    sdpa, varlen = pair_of_models(2)
    ds = Dataset.from_dict({"prompt_input_ids": prompts, COMPLETIONS: completions})
    a = compute_reference_logps(varlen, ds, pad_token_id=PAD, batch_size=2)
    b = compute_reference_logps(sdpa, ds, pad_token_id=PAD, batch_size=2)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
