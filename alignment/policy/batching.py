"""Turn tokenized examples into one model batch holding every completion of every example.

Every method is "a prompt with C completions": DPO/IPO (chosen, rejected), KTO (completion, mismatched
completion for the KL reference point), BCO (completion), D²O (K reference samples, rejected). Flattening
them into B·C sequences lets one forward pass score them all (chosen and rejected together, as the DPO
spec asks), and the log-probs come back as a (B, C) tensor.

Two layouts:

* **padded** — (B·C, T) right-padded rows with an attention mask; what every HF model accepts.
* **packed** — padding-free: all sequences concatenated into rows of at most `pack_length` tokens, with
  `position_ids` restarting at 0 for each sequence and no attention mask. transformers' masking utilities
  detect the restarts and build a block-diagonal causal mask, so no token attends across sequences. No
  compute is spent on padding, and only completion positions are projected onto the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

COMPLETIONS = "completion_ids"  # column: list of C token-id lists per example
REF_LOGPS = "ref_logps"  # column: list of C precomputed reference log-probs per example


@dataclass
class SequenceBatch:
    """Model inputs for B examples × C completions. Legend: N = B·C sequences, L = total tokens kept.

    `target_positions` index the flattened (rows × T) token grid at the positions whose *next* token is a
    completion token; `target_ids` are those next tokens and `target_seq` says which of the N sequences
    each belongs to, so summed log-probs are one `index_add_` away.
    """

    input_ids: torch.Tensor  # (R, T)
    attention_mask: torch.Tensor | None  # (R, T) padded layout; None when packed
    position_ids: torch.Tensor | None  # (R, T) packed layout; None when padded
    target_positions: torch.Tensor  # (M,) flat indices into the (R*T) grid
    target_ids: torch.Tensor  # (M,)
    target_seq: torch.Tensor  # (M,) in [0, N)
    num_examples: int  # B
    num_completions: int  # C
    cu_seq_lens: torch.Tensor | None = None  # (N+1,) int32 sequence starts of a one-row pack (varlen kernels)

    @property
    def num_sequences(self) -> int:
        return self.num_examples * self.num_completions

    def completion_lengths(self) -> torch.Tensor:
        """(B, C) number of completion tokens of each sequence (IPO's length normalisation uses it)."""
        counts = torch.zeros(self.num_sequences, dtype=torch.long)
        counts.index_add_(0, self.target_seq, torch.ones_like(self.target_seq))
        return counts.view(self.num_examples, self.num_completions)

    def to(self, device: torch.device | str) -> SequenceBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return SequenceBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=move(self.attention_mask),
            position_ids=move(self.position_ids),
            target_positions=self.target_positions.to(device),
            target_ids=self.target_ids.to(device),
            target_seq=self.target_seq.to(device),
            num_examples=self.num_examples,
            num_completions=self.num_completions,
            cu_seq_lens=move(self.cu_seq_lens),
        )


def _sequences(prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[Sequence[int]]]):
    """Yield (prompt, completion) token lists in example-major order: example b, completion c -> b*C + c."""
    for prompt, comps in zip(prompt_ids, completions, strict=True):
        for completion in comps:
            yield list(prompt), list(completion)


def right_pad(seqs: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids``/``attention_mask`` (N, T) of `seqs` right-padded to the longest, T = its length."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, tokens in enumerate(seqs):
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask


def build_padded_batch(
    prompt_ids: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
) -> SequenceBatch:
    """Right-padded (N, T) batch; T is the longest prompt+completion in the batch."""
    num_completions = len(completions[0])
    pairs = list(_sequences(prompt_ids, completions))
    input_ids, attention_mask = right_pad([p + c for p, c in pairs], pad_token_id)
    width = input_ids.shape[1]
    positions, targets, seqs = [], [], []
    for row, (prompt, completion) in enumerate(pairs):
        # Token at position t is predicted by the logits at t-1: completion token i (at len(prompt)+i)
        # is scored at flat position row*width + len(prompt)+i-1.
        start = row * width + len(prompt) - 1
        positions.extend(range(start, start + len(completion)))
        targets.extend(completion)
        seqs.extend([row] * len(completion))
    return SequenceBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=None,
        target_positions=torch.tensor(positions, dtype=torch.long),
        target_ids=torch.tensor(targets, dtype=torch.long),
        target_seq=torch.tensor(seqs, dtype=torch.long),
        num_examples=len(completions),
        num_completions=num_completions,
    )


def build_packed_batch(
    prompt_ids: Sequence[Sequence[int]],
    completions: Sequence[Sequence[Sequence[int]]],
    *,
    pad_token_id: int,
    pack_length: int | None,
) -> SequenceBatch:
    """Padding-free rows of at most `pack_length` tokens (first-fit in order; None: one row holding them all);
    sequences never split. A one-row pack also carries its sequence boundaries (`cu_seq_lens`).

    Rows are filled greedily in order, so the result is deterministic and every sequence keeps its index.
    A sequence longer than `pack_length` gets a row of its own. Rows are right-padded to the longest row;
    padding positions continue the last sequence's positions (they are never targets, and causal masking
    means no real token attends to them).
    """
    num_completions = len(completions[0])
    rows: list[list[tuple[int, list[int], list[int]]]] = []
    row_lengths: list[int] = []
    for index, (prompt, completion) in enumerate(_sequences(prompt_ids, completions)):
        length = len(prompt) + len(completion)
        if rows and (pack_length is None or row_lengths[-1] + length <= pack_length):
            rows[-1].append((index, prompt, completion))
            row_lengths[-1] += length
        else:
            rows.append([(index, prompt, completion)])
            row_lengths.append(length)
    width = max(row_lengths)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    positions, targets, seqs = [], [], []
    for r, row in enumerate(rows):
        offset = 0
        for index, prompt, completion in row:
            tokens = prompt + completion
            input_ids[r, offset : offset + len(tokens)] = torch.tensor(tokens)
            position_ids[r, offset : offset + len(tokens)] = torch.arange(len(tokens))
            start = r * width + offset + len(prompt) - 1
            positions.extend(range(start, start + len(completion)))
            targets.extend(completion)
            seqs.extend([index] * len(completion))
            offset += len(tokens)
        if offset < width:  # padding keeps counting up so it is not mistaken for a new sequence start
            last = int(position_ids[r, offset - 1])
            position_ids[r, offset:] = torch.arange(last + 1, last + 1 + width - offset)
    cu_seq_lens = None
    if len(rows) == 1:
        starts = [0]
        for _, prompt, completion in rows[0]:
            starts.append(starts[-1] + len(prompt) + len(completion))
        cu_seq_lens = torch.tensor(starts, dtype=torch.int32)
    return SequenceBatch(
        input_ids=input_ids,
        attention_mask=None,
        position_ids=position_ids,
        cu_seq_lens=cu_seq_lens,
        target_positions=torch.tensor(positions, dtype=torch.long),
        target_ids=torch.tensor(targets, dtype=torch.long),
        target_seq=torch.tensor(seqs, dtype=torch.long),
        num_examples=len(completions),
        num_completions=num_completions,
    )


class CompletionCollator:
    """`DataCollator` for the trainer: builds a `SequenceBatch` plus per-example tensors.

    Columns other than the token ids (labels, UDM weights, precomputed reference log-probs) are stacked
    into tensors under their own names; text columns are dropped.
    """

    def __init__(self, pad_token_id: int, *, packed: bool = True, pack_length: int | None = 1024):
        self.pad_token_id = pad_token_id
        self.packed = packed
        self.pack_length = pack_length

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = [f["prompt_input_ids"] for f in features]
        completions = [f[COMPLETIONS] for f in features]
        if self.packed:
            sequences = build_packed_batch(
                prompts, completions, pad_token_id=self.pad_token_id, pack_length=self.pack_length
            )
        else:
            sequences = build_padded_batch(prompts, completions, pad_token_id=self.pad_token_id)
        batch: dict[str, Any] = {"sequences": sequences}
        for key, value in features[0].items():
            if key == COMPLETIONS or key.endswith("input_ids") or isinstance(value, str):
                continue
            if isinstance(value, (bool, int, float, list)):
                batch[key] = torch.tensor([f[key] for f in features])
        return batch
