"""Reference log-probs: adapter disabled, a frozen copy, or precomputed once and cached on disk.

* ``adapter`` — LoRA policies: the reference is the same network with the adapter switched off, so no
  second copy of the weights is held.
* ``copy`` — a frozen, eval-mode copy of the initial policy, run under ``no_grad`` every step.
* ``precomputed`` — the policy at step 0 *is* the reference, so its log-probs are computed once before
  training with the same batching and forward as the training step (so tokenisation and truncation are
  identical, spec pitfall 4), stored as a dataset column, and cached on disk keyed by the token ids'
  content hash and the model's weights hash. Later runs on the same data and model load the cache and hold
  no reference model at all.

Which mode a run uses (``model.reference: auto`` resolved) is decided in one place,
`alignment.recipe.schema.reference_mode`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from alignment.policy.batching import COMPLETIONS, REF_LOGPS, build_packed_batch, build_padded_batch
from alignment.policy.logps import sequence_logps
from alignment.policy.varlen import uses_varlen

logger = logging.getLogger(__name__)

VARLEN_BATCH_SIZE = 64  # examples per packed reference row under varlen_sdpa (activations only: no gradients)


@contextlib.contextmanager
def reference_context(model: nn.Module, mode: str) -> Iterator[None]:
    """no_grad (+ adapter disabled for ``adapter`` mode) around a reference forward of `model`."""
    with torch.no_grad():
        if mode == "adapter":
            unwrapped = getattr(model, "module", model)  # DeepSpeed / DDP wrappers
            with unwrapped.disable_adapter():
                yield
        else:
            yield


def dataset_content_hash(dataset) -> str:
    """sha256 of the prompt and completion token ids, in row order: what the reference log-probs depend on."""
    digest = hashlib.sha256()
    for row in dataset.select_columns(["prompt_input_ids", COMPLETIONS]):
        digest.update(np.asarray(row["prompt_input_ids"], dtype=np.int64).tobytes())
        for completion in row[COMPLETIONS]:
            digest.update(b"|")
            digest.update(np.asarray(completion, dtype=np.int64).tobytes())
        digest.update(b"#")
    return digest.hexdigest()[:24]


def model_weights_hash(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, bytes): identifies the reference exactly.

    Parameters of a ZeRO-3 model are empty shards; the hash then covers this rank's shard names and
    shapes only, and callers should pass the unwrapped model before partitioning.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


def compute_reference_logps(
    model: nn.Module, dataset, *, pad_token_id: int, batch_size: int = 16, mode: str = "copy"
) -> np.ndarray:
    """(rows, C) reference log-probs of every completion, batched, in eval mode, without gradients.

    Under `varlen_sdpa` the pass packs `VARLEN_BATCH_SIZE` examples into one row (per-sequence attention, the
    vocabulary projection on completion positions only): forward-only work at the training step's layout.
    """
    was_training = model.training
    model.eval()
    out = []
    varlen = uses_varlen(model)
    if varlen:
        batch_size = max(batch_size, VARLEN_BATCH_SIZE)
    try:
        with reference_context(model, mode if mode == "adapter" else "copy"):
            for start in range(0, len(dataset), batch_size):
                rows = dataset[start : start + batch_size]
                if varlen:
                    batch = build_packed_batch(
                        rows["prompt_input_ids"],
                        rows[COMPLETIONS],
                        pad_token_id=pad_token_id,
                        pack_length=None,
                    )
                else:
                    batch = build_padded_batch(
                        rows["prompt_input_ids"], rows[COMPLETIONS], pad_token_id=pad_token_id
                    )
                device = next(model.parameters()).device
                out.append(sequence_logps(model, batch.to(device)).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out, axis=0)


def add_reference_logps(
    dataset,
    model: nn.Module,
    *,
    pad_token_id: int,
    cache_dir: str | os.PathLike | None,
    batch_size: int = 16,
    mode: str = "copy",
):
    """The dataset with a `ref_logps` column, from the on-disk cache when data and weights match."""
    cache_file = None
    if cache_dir is not None:
        kernel = "-varlen" if uses_varlen(model) else ""  # its values differ from sdpa's in the last bits
        key = f"{dataset_content_hash(dataset)}-{model_weights_hash(model)}-{mode}{kernel}"
        cache_file = Path(cache_dir) / f"{key}.npy"
        if cache_file.exists():
            values = np.load(cache_file)
            if values.shape[0] == len(dataset):
                logger.info("reference log-probs: loaded %d rows from cache %s", len(dataset), cache_file)
                return dataset.add_column(REF_LOGPS, values.tolist())
    values = compute_reference_logps(
        model, dataset, pad_token_id=pad_token_id, batch_size=batch_size, mode=mode
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npy")
        np.save(tmp, values)
        os.replace(tmp, cache_file)  # atomic: a crash never leaves a half-written cache entry
        (cache_file.with_suffix(".json")).write_text(json.dumps({"rows": len(dataset), "mode": mode}))
        logger.info("reference log-probs: computed %d rows, cached at %s", len(dataset), cache_file)
    return dataset.add_column(REF_LOGPS, values.tolist())
