"""Summed completion log-probs: the quantity every loss in the library is a function of.

log π(y|x) = Σ_t log π(y_t | x, y_<t) over completion tokens only (prompt and padding masked), as DPO, IPO,
KTO, BCO and D²O all define it. Only the positions that predict a completion token are projected onto
the vocabulary where that gives the same numbers: `logits_to_keep` for one-row packs, and a hidden-state
gather for several rows in passes without gradients (reference log-probs, evaluation). That saves the
(N, T, V) logits tensor that dominates memory for large vocabularies. A training step over several rows still
projects every position (gathering first changes the head's gradient in its last bits); `varlen_sdpa` packs a
batch into one row instead (`alignment.policy.varlen`).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from alignment.policy.batching import SequenceBatch
from alignment.policy.varlen import uses_varlen


def gather_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row without materialising the full log-softmax. (M, V), (M,) -> (M,)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32, fp64 stays
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def completion_logits(model: nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """(M, V) logits at exactly the target positions, through the model's own forward.

    Going through `model(...)` (not its submodules) keeps DeepSpeed's and peft's hooks in charge. Packed
    batches have one row per pack, so `logits_to_keep` can name the target positions directly; padded
    batches with several rows keep positions up to the row's width and gather afterwards.
    """
    rows, width = batch.input_ids.shape
    if rows == 1:
        varlen = {}
        if batch.cu_seq_lens is not None and uses_varlen(model):  # per-sequence attention (`varlen_sdpa`)
            longest = int((batch.cu_seq_lens[1:] - batch.cu_seq_lens[:-1]).max())
            varlen = dict(cu_seq_lens_q=batch.cu_seq_lens, cu_seq_lens_k=batch.cu_seq_lens,
                          max_length_q=longest, max_length_k=longest)  # fmt: skip
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            logits_to_keep=batch.target_positions,
            use_cache=False,
            **varlen,
        )
        return out.logits[0]
    inputs = dict(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    if not torch.is_grad_enabled():
        logits = _projected_at_targets(model, batch, inputs)
        if logits is not None:
            return logits
    return model(**inputs).logits.reshape(rows * width, -1)[batch.target_positions]


_EXACT: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _projected_at_targets(model: nn.Module, batch: SequenceBatch, inputs: dict) -> torch.Tensor | None:
    """Passes without gradients (reference log-probs, evaluation) over several rows: the final hidden states at
    the target positions through the output head, instead of every position's logits. The same numbers — checked
    bit for bit against the model's own logits on its first batch, else never used for that model (a model that
    scales or caps its logits) — for a fraction of the vocabulary projection and its memory. (With gradients the
    two paths differ in the last bits of the head's gradient, which would move training results.)"""
    unwrapped = getattr(model, "module", model)  # DeepSpeed / DDP wrappers; peft forwards the attribute
    head = unwrapped.get_output_embeddings() if hasattr(unwrapped, "get_output_embeddings") else None
    if head is None or _EXACT.get(unwrapped) is False:
        return None
    rows, width = batch.input_ids.shape
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    logits = head(out.hidden_states[-1].reshape(rows * width, -1)[batch.target_positions])
    if unwrapped not in _EXACT:
        full = model(**inputs).logits.reshape(rows * width, -1)[batch.target_positions]
        _EXACT[unwrapped] = torch.equal(logits, full)
        return full
    return logits


def sum_per_sequence(per_token: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """(M,) values at the target positions -> (B, C) sums over each completion's tokens."""
    summed = torch.zeros(batch.num_sequences, dtype=per_token.dtype, device=per_token.device)
    summed = summed.index_add(0, batch.target_seq, per_token)
    return summed.view(batch.num_examples, batch.num_completions)


def token_logps(model: nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """(M,) log-prob of every completion token (`batch.target_seq` names its sequence), one forward pass."""
    return gather_logps(completion_logits(model, batch), batch.target_ids)


def sequence_logps(model: nn.Module, batch: SequenceBatch) -> torch.Tensor:
    """(B, C) summed completion log-probs for every example and completion in one forward pass."""
    return sum_per_sequence(token_logps(model, batch), batch)


def sequence_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """(B, C) exact KL(π || π_ref) summed over each completion's tokens: Σ_t Σ_v π(v|ctx_t) log π/π_ref.

    The low-variance estimator the online-vs-offline study asks for (its pitfall 3), and exactly 0 when
    both models are the same.
    """
    dtype = torch.promote_types(policy_logits.dtype, torch.float32)
    logp = torch.log_softmax(policy_logits.to(dtype), dim=-1)
    logq = torch.log_softmax(ref_logits.to(dtype), dim=-1)
    per_token = (logp.exp() * (logp - logq)).sum(-1)
    return sum_per_sequence(per_token, batch)
