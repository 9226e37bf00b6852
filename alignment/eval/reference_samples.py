"""The reference side's samples of an evaluation, drawn once per (reference, prompts, settings) and kept.

Every run of a study evaluates against the same reference (the initial model) on the same prompts with the
same seed, so every run would draw the very same reference samples again: half of an evaluation's sampling.
They are kept under ``$ALIGNMENT_CACHE/eval-reference/<key>.json`` (`cache_root`), where the key covers
everything the samples depend on: the reference's weights (`model_weights_hash`), its tokenizer's vocabulary, its template and stop
strings, the sampler (backend), the prompts in order and the sampling parameters. A hit returns exactly the
samples a draw would have returned. Not cached: unseeded sampling, and a reference that is a LoRA policy with its
adapter off (its state holds the adapter being trained, so no two evaluations would share a key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from alignment.eval.policy import Policy
from alignment.files import user_cache_dir, write_text_atomic
from alignment.policy.reference import model_weights_hash
from alignment.sampling.base import Completions, SamplingParams

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
# A frozen reference is hashed once per model object (a periodic evaluation asks at every evaluation).
_WEIGHTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def cache_path(reference: Policy, prompts: Sequence[str], params: SamplingParams) -> Path | None:
    """Where `reference`'s samples of `prompts` under `params` are kept; None when they are not cacheable."""
    if reference.adapter_disabled or params.seed is None:  # no seed: every draw is meant to be a new one
        return None
    if reference.scorer not in _WEIGHTS:
        _WEIGHTS[reference.scorer] = model_weights_hash(reference.scorer)
    vocab = hashlib.sha256(json.dumps(sorted(reference.tokenizer.get_vocab().items())).encode()).hexdigest()
    key = {
        "version": CACHE_VERSION,
        "weights": _WEIGHTS[reference.scorer],
        "vocabulary": vocab[:16],
        "template": reference.template,
        "stop": list(reference.stop),
        "sampler": type(reference.sampler).__name__,
        "prompts": list(prompts),
        "params": dataclasses.asdict(params),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_root() / f"{digest}.json"


def cache_root() -> Path:
    """`$ALIGNMENT_EVAL_REFERENCE_CACHE`, default `$ALIGNMENT_CACHE/eval-reference` (the test suite points it at a
    directory of its own, so no test depends on what earlier sessions left)."""
    override = os.environ.get("ALIGNMENT_EVAL_REFERENCE_CACHE")
    return Path(override) if override else user_cache_dir() / "eval-reference"


def reference_samples(reference: Policy, prompts: Sequence[str], params: SamplingParams) -> Completions:
    """`reference.generate(prompts, params)`, from the cache when an earlier evaluation drew the same."""
    path = cache_path(reference, prompts, params)
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        logger.info("evaluation: the reference's samples loaded from %s", path)
        return Completions(list(prompts), stored["texts"], stored["token_ids"], stored["logprobs"])
    out = reference.generate(prompts, params)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stored = {"texts": out.texts, "token_ids": out.token_ids, "logprobs": out.logprobs}
            write_text_atomic(path, json.dumps(stored))  # compact: thousands of token ids
        except OSError as err:  # a full or read-only cache costs the next run a draw, never this one
            logger.warning("evaluation: could not keep the reference's samples in %s (%s)", path, err)
    return out
