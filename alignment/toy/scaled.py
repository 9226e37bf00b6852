"""Larger configurations of the toy model's architecture (~4M, 20M, 80M parameters), for benchmarks.

Same tokenizer and Llama architecture as `toy-base`, widened and deepened (`SHAPES`; the 20M one, hidden 512,
6 layers, 8 heads of 64, is `LARGE_SHAPE`), randomly initialised with a fixed seed: throughput depends on
shapes, not on what the weights learned.
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
#: the benchmarks' size ladder (parameters with the toy vocabulary); "1M" is toy-base itself
SHAPES: dict[str, dict[str, int]] = {
    "4M": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=4, head_dim=64),
    "20M": LARGE_SHAPE,
    "80M": dict(hidden_size=1024, intermediate_size=2752, num_hidden_layers=6, num_attention_heads=16,
                num_key_value_heads=16, head_dim=64),
}  # fmt: skip


def save_scaled_model(
    model_dir: str | Path,
    out: str | Path,
    *,
    shape: dict[str, int] = LARGE_SHAPE,
    max_positions: int | None = None,
    seed: int = 0,
) -> Path:
    """Write `shape` of `model_dir`'s architecture (with its tokenizer) to `out`, randomly initialised."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    config.update(shape)
    if max_positions is not None:
        config.max_position_embeddings = max(config.max_position_embeddings, max_positions)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return Path(out)
