"""`varlen_sdpa`: attention over packed sequences that computes each sequence's own causal block only.

With a packed row of several sequences, transformers' `sdpa` builds a block-diagonal causal mask from the
restarting `position_ids` and runs attention over the whole row: the blocks between sequences are computed
and then masked, (Σ Lᵢ)² work for Σ Lᵢ² of use. `flash_attention_2` skips them, but only on GPUs with the
flash-attn package. This kernel, registered with transformers' `AttentionInterface` (select it with
`model.attn_implementation: varlen_sdpa`), takes the sequence boundaries the way flash-attention does
(`cu_seq_lens_q`, passed by `alignment.policy.logps.completion_logits` for single-row packs) and runs
PyTorch's SDPA once per sequence with `is_causal=True`: exact per-sequence causal attention on any device.
Without boundaries (generation, padded batches) it is plain `sdpa`.

Because nothing is wasted on cross-sequence blocks, a batch can be packed into one row of any length, and
then only the completion positions go through the vocabulary projection (`logits_to_keep`), which a
multi-row pack cannot do (see `uses_varlen`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

NAME = "varlen_sdpa"


def varlen_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(1, H, T, D) query and (1, Hkv, T, D) key/value of one packed row -> (1, T, H, D), per-sequence causal."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None or query.shape[0] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    gqa = query.shape[1] != key.shape[1]
    bounds = cu_seq_lens_q.tolist()
    pieces = [
        F.scaled_dot_product_attention(
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            dropout_p=dropout if module.training else 0.0,
            scale=scaling,
            is_causal=True,
            enable_gqa=gqa,
        )
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `varlen_sdpa` a valid `attn_implementation` for transformers models (idempotent). Its masks are
    sdpa's, so padded batches (left-padded generation included) are masked as under `sdpa`; with packed
    boundaries the kernel does not read the mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, varlen_sdpa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


def uses_varlen(model: nn.Module) -> bool:
    """Whether `model` (or the model inside a peft/DeepSpeed wrapper) attends with `varlen_sdpa`."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "module"):
        config = getattr(model.module, "config", None)
    return getattr(config, "_attn_implementation", None) == NAME
