"""A token prefix that every row of a batch shares, encoded once instead of once per row.

An in-context policy (URIAL: a base model behind a preamble and k examples) puts the same ~100+ tokens before
every query; sampling and scoring it row by row spends most of each forward pass re-encoding that constant.
Here the prefix runs once, batch 1, and its key/value cache is repeated over the rows; each row then runs only
its own tokens after it, at positions that continue the prefix's. Rows are found to share a prefix from their
token ids (the longest common prefix of the batch), so the rule needs no knowledge of templates or tokenizers
and never applies where rows merely look alike.

The numbers are those of the full rows up to float rounding (a different grouping of the same sums), not bit
for bit: batches without a shared prefix of `MIN_SHARED_PREFIX` tokens (every trained run's evaluation without
a template) take the plain path and stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alignment.policy.batching import SequenceBatch, build_padded_batch

#: shortest shared prefix worth a separate pass (shorter ones cost more in bookkeeping than they save)
MIN_SHARED_PREFIX = 32


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, at most the shortest row's length minus one: each row keeps at least its
    last token, whose next-token distribution starts its completion (or its sampling)."""
    if not rows:
        return 0
    first, limit = rows[0], min(len(r) for r in rows) - 1
    length = 0
    while length < limit and all(r[length] == first[length] for r in rows):
        length += 1
    return length


def reusable_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """`shared_prefix_length`, or 0 when it is shorter than `MIN_SHARED_PREFIX`: the one rule sampling and
    scoring follow for when a prefix is encoded once."""
    length = shared_prefix_length(rows)
    return length if length >= MIN_SHARED_PREFIX else 0


def prefix_cache(model: nn.Module, prefix: Sequence[int], rows: int):
    """The key/value cache of `prefix` (one forward pass, batch 1), repeated for `rows` rows."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(rows)
    return cache


def build_prefixed_batch(
    prompt_ids: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
) -> tuple[list[int], SequenceBatch] | None:
    """(shared prefix, the padded batch of what follows it in each sequence), or None when the prompts share
    fewer than `MIN_SHARED_PREFIX` tokens. The batch's targets, sequence indices and counts are those of the
    full sequences' batch; its positions index the suffix grid."""
    length = reusable_prefix_length(prompt_ids)
    if not length:
        return None
    suffixes = [list(p[length:]) for p in prompt_ids]
    return list(prompt_ids[0][:length]), build_padded_batch(suffixes, completions, pad_token_id=pad_token_id)


@torch.no_grad()
def completion_logits_after_prefix(
    model: nn.Module, prefix: Sequence[int], batch: SequenceBatch
) -> torch.Tensor:
    """(M, V) logits at `batch`'s target positions, every row read behind `prefix` (encoded once)."""
    rows, width = batch.input_ids.shape
    cache = prefix_cache(model, prefix, rows)
    seen = torch.ones(rows, len(prefix), dtype=batch.attention_mask.dtype, device=batch.attention_mask.device)
    positions = torch.arange(len(prefix), len(prefix) + width, device=batch.input_ids.device).expand(rows, -1)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=torch.cat([seen, batch.attention_mask], dim=1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    )
    return out.logits.reshape(rows * width, -1)[batch.target_positions]
