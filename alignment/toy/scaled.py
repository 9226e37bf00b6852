"""A ~20M-parameter configuration of the toy model's architecture, for benchmarks at a less trivial size.

Same tokenizer and Llama architecture as `toy-base`, widened and deepened (hidden 512, 6 layers, 8 heads of
64), randomly initialised with a fixed seed: throughput depends on shapes, not on what the weights learned.
"""

from __future__ import annotations

from pathlib import Path

LARGE_SHAPE = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=8,
    head_dim=64,
)


def save_scaled_model(model_dir: str | Path, out: str | Path, *, seed: int = 0) -> Path:
    """Write the scaled configuration of `model_dir`'s architecture (with its tokenizer) to `out`."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.update(LARGE_SHAPE)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return Path(out)
