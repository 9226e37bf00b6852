"""Sampling with vLLM, plus the policy -> engine weight push.

One engine per process, created on first use and cached by model directory (start-up is ~30 s on CPU).
The engine runs **in-process** (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): weight pushes go through
``LLM.collective_rpc("reload_weights", ...)``, which then calls the worker's in-place reload on the same
tensors instead of pickling every weight to an engine-core subprocess, and in-process is the mode in which
the push was verified on the CPU backend (docs/vllm.md: the vLLM facts these settings rely on).

Identical inputs to the transformers backend: prompts are tokenized here with the same rule
(`base.prompt_token_ids`) and passed as token ids; completions are decoded here with the same tokenizer
and ``skip_special_tokens=True``; stop tokens are the tokenizer's EOS plus the checkpoint's
generation-config EOS ids; the checkpoint's generation-config sampling defaults are ignored
(``generation_config="vllm"``), so only `SamplingParams` decides what is sampled.

Log-probs: ``logprobs_mode="raw_logprobs"`` (vLLM 0.32's default, pinned here) returns log-softmax of the
logits *before* temperature / top-p / top-k (vllm/v1/sample/sampler.py, step 1a), i.e. the unmodified
model distribution the Sampler contract asks for. ``logprobs=0`` returns only the sampled token's value.

Stop strings: vLLM gets them (``stop``; it then needs ``detokenize=True``, which is set only when there are
any) so the engine ends a request at one, but its ``token_ids`` still hold the stop string's tokens; each
sample is therefore cut here by `base.cut_at_stop`, the rule the transformers backend applies, and its
log-prob summed over the kept ids.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from alignment.errors import BackendError
from alignment.sampling.base import (
    Completions,
    SamplingParams,
    cut_at_stop,
    prompt_token_ids,
    stop_token_ids,
)

logger = logging.getLogger(__name__)

_ENGINES: dict[str, object] = {}  # resolved model dir -> vllm.LLM; one engine per process
_ALTERNATIVE = "set `sampling.backend: transformers` to sample with Hugging Face generate instead"


class _RotaryReloadNotice(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights", logged on every in-place weight push: a rotary
    layer's cos/sin cache is computed, never part of a checkpoint, so a reload has nothing to load into it and
    vLLM puts the existing cache back (harmless: the samples after a push match a fresh engine's, tested)."""

    PATTERN = re.compile(r"^\w*RotaryEmbedding: Failed to load weights$")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.PATTERN.match(record.getMessage())


RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


def _import_vllm(kv_cache_space_gib: float):
    """Set the environment vLLM reads at engine start, then import it (lazily: the package is optional)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process engine: see module docstring
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # its ~45 start-up lines only when asked (INFO)
    reload_logger = logging.getLogger(RELOAD_LOGGER)
    if not any(isinstance(f, _RotaryReloadNotice) for f in reload_logger.filters):
        reload_logger.addFilter(_RotaryReloadNotice())
    if not torch.cuda.is_available():
        # CPU KV-cache size in whole GiB (vLLM parses an int); without it vLLM reserves most of the RAM.
        wanted = str(max(1, math.ceil(kv_cache_space_gib)))
        given = os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", wanted)
        if not given.strip().isdigit() or int(given) < 1:
            raise BackendError(
                f"VLLM_CPU_KVCACHE_SPACE={given!r} in the environment leaves vLLM no KV cache; unset it (then "
                f"sampling.vllm.kv_cache_space_gib sets it, now {kv_cache_space_gib:g} GiB) or set it to a whole "
                "number of GiB >= 1"
            )
        if given != wanted:
            logger.info(
                "vLLM KV cache: %s GiB from VLLM_CPU_KVCACHE_SPACE (the recipe asks %s)", given, wanted
            )
        logger.info(
            "vLLM on CPU: sampling.vllm.gpu_memory_utilization is the fraction of this node's RAM it may reserve "
            "(start-up fails when that much is not free); its KV cache is %s GiB (sampling.vllm.kv_cache_space_gib, "
            "or VLLM_CPU_KVCACHE_SPACE)",
            given,
        )
    try:
        import vllm
    except Exception as exc:  # ImportError, or a broken install (e.g. CUDA torchvision on a CPU host)
        raise BackendError(
            f"sampling backend 'vllm' is unavailable: importing vllm failed ({exc}); {_ALTERNATIVE}"
        ) from exc
    return vllm


class VLLMSampler:
    """`Sampler` over a cached in-process `vllm.LLM` started from `model_dir` (HF checkpoint directory).

    The engine is created by the first `VLLMSampler` for a directory; later ones for the same directory
    share it (and its weights: a push through one is seen by all) and their engine arguments are ignored.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,  # on CPU: fraction of the NUMA node's RAM vLLM may claim
        enforce_eager: bool = True,
        kv_cache_space_gib: float = 1.0,
        seed: int = 0,
    ):
        from transformers import AutoTokenizer, GenerationConfig

        self.model_dir = str(Path(model_dir).resolve())
        self.vllm = _import_vllm(kv_cache_space_gib)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.stop_token_ids = _eos_ids(self.tokenizer, GenerationConfig, self.model_dir)
        if self.model_dir not in _ENGINES:
            try:
                # the worker reseeds random/numpy/torch at start-up; training must not notice an engine
                # started in the middle of it (a periodic evaluation), so the states are put back after
                with _rng_preserved():
                    _ENGINES[self.model_dir] = self.vllm.LLM(
                        model=self.model_dir,
                        dtype=dtype,
                        max_model_len=max_model_len,
                        gpu_memory_utilization=gpu_memory_utilization,
                        enforce_eager=enforce_eager,
                        seed=seed,
                        logprobs_mode="raw_logprobs",
                        generation_config="vllm",
                        # an in-context prefix (URIAL) shared by every prompt is computed once; vLLM's default
                        # for this architecture, said here so that no default change can drop it unnoticed
                        enable_prefix_caching=True,
                        # vLLM rewinds a seeded request's generator when a chunked prefill discards its token,
                        # which the CPU backend's generators cannot do ("CPU Generator does not use offset"):
                        # long prompts (an in-context prefix) crash there unless prefills stay whole.
                        **({} if torch.cuda.is_available() else {"enable_chunked_prefill": False}),
                    )
            except Exception as exc:
                raise BackendError(
                    f"sampling backend 'vllm' failed to start an engine for {self.model_dir}: "
                    f"{type(exc).__name__}: {exc}; {_ALTERNATIVE}"
                ) from exc
        self.llm = _ENGINES[self.model_dir]

    # ------------------------------------------------------------------ generate
    def _vllm_params(self, params: SamplingParams, seed: int | None):
        return self.vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,  # vLLM: -1 = off (ours: 0)
            max_tokens=params.max_new_tokens,
            seed=seed,
            logprobs=0 if params.logprobs else None,  # 0: the sampled token's log-prob only
            stop_token_ids=self.stop_token_ids,
            # vLLM matches stop strings on its own detokenized text (include_stop_str_in_output=False);
            # the ids are then cut, and the text decoded, below with the HF tokenizer by `cut_at_stop`
            stop=list(params.stop) or None,
            detokenize=bool(params.stop),  # otherwise decoded below, exactly as the transformers backend
        )

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Completions:
        prompts = list(prompts)
        requests = [{"prompt_token_ids": ids} for ids in prompt_token_ids(self.tokenizer, prompts)]
        # A vLLM seed is per request (and its n children use seed + i): one seed for every prompt would give
        # every prompt the *same* random stream, correlating samples across prompts (measured: batch means
        # of log π moved by 50 standard errors between seeds). So each prompt gets its own derived seed.
        sp = [self._vllm_params(params, s) for s in _per_prompt_seeds(params.seed, len(prompts))]
        outputs = self.llm.generate(requests, sp, use_tqdm=len(prompts) >= 256)
        token_ids, logprobs = [], [] if params.logprobs else None
        for out in outputs:  # same order as `requests`
            samples = sorted(out.outputs, key=lambda o: o.index)
            ids = [list(o.token_ids) for o in samples]
            if params.stop:  # vLLM's ids include the stop string's tokens: the shared rule cuts them
                ids = [cut_at_stop(i, self.tokenizer, params.stop)[0] for i in ids]
            token_ids.append(ids)
            if logprobs is not None:  # kept ids are a prefix: the sum runs over them only
                logprobs.append([_sampled_logprob_sum(i, o.logprobs) for i, o in zip(ids, samples)])
        texts = [[self.tokenizer.decode(s, skip_special_tokens=True) for s in per_p] for per_p in token_ids]
        return Completions(prompts=prompts, texts=texts, token_ids=token_ids, logprobs=logprobs)

    def sequence_logprobs(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]]
    ) -> list[float]:
        """log π(y|x) of given (prompt ids, completion ids) pairs from the engine's current weights:
        prefill prompt+completion with ``prompt_logprobs=0`` (raw log-probs of each actual next token,
        the same quantity a trainer's forward pass computes) and sum the completion positions.
        Used to check weight pushes by log-prob equality."""
        sp = self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
        requests = [{"prompt_token_ids": list(p) + list(c)} for p, c in zip(prompt_ids, completion_ids)]
        outputs = self.llm.generate(requests, sp, use_tqdm=False)
        sums = []
        for out, p, c in zip(outputs, prompt_ids, completion_ids):
            ids = list(p) + list(c)
            sums.append(sum(out.prompt_logprobs[i][ids[i]].logprob for i in range(len(p), len(ids))))
        return sums

    # ------------------------------------------------------------------ weights
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push full HF-named weights (e.g. `model_state_for_sync(policy)`) into the running engine.

        The worker's ``reload_weights`` (vllm/model_executor/model_loader/reload/inplace.py) runs the
        model's own checkpoint loader on the iterator (``is_checkpoint_format=True``: HF names and
        layouts; q/k/v and gate/up are fused by the loader) inside its layer-wise reload wrapper, which
        re-applies the CPU backend's weight repacking. Then cached KV blocks computed with the old
        weights are dropped.
        """
        weights = [(name, t.detach()) for name, t in named_tensors]  # materialise: ZeRO-3 gathers are scoped
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()


@contextmanager
def _rng_preserved() -> Iterator[None]:
    """The global random, numpy and torch (CPU and CUDA) generator states, restored on exit."""
    import random

    import numpy as np

    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _per_prompt_seeds(seed: int | None, count: int) -> list[int | None]:
    """Independent 32-bit seeds, one per prompt position, reproducible from `seed` (None stays None)."""
    if seed is None:
        return [None] * count
    import numpy as np

    children = np.random.SeedSequence(seed).spawn(count)
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]


def _eos_ids(tokenizer, generation_config_cls, model_dir: str) -> list[int]:
    try:
        eos = generation_config_cls.from_pretrained(model_dir).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    return stop_token_ids(tokenizer, eos)


def _sampled_logprob_sum(token_ids: Sequence[int], logprobs) -> float:
    """Sum of the sampled tokens' log-probs from a vLLM `CompletionOutput.logprobs` (list or FlatLogprobs)."""
    return float(sum(logprobs[i][tok].logprob for i, tok in enumerate(token_ids)))


# ---------------------------------------------------------------------- policy -> engine weights
_PEFT_SKIP = (
    "lora_A",
    "lora_B",
    "lora_embedding_A",
    "lora_embedding_B",
    "lora_magnitude_vector",
    ".original_module.",
)


def model_state_for_sync(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, full_tensor)`` for every weight of a policy, ready for `Sampler.load_weights`.

    * peft LoRA: each LoRA layer yields ``W + Σ_active scale·B@A`` (peft's `get_delta_weight`) computed
      into a new tensor, so the training model is never mutated; ``base_model.model.`` / ``.base_layer``
      / ``.modules_to_save.<adapter>`` are stripped from names and adapter tensors are skipped.
    * DeepSpeed ZeRO-3 (parameters carry ``ds_id``): each module's own parameters are gathered with
      ``deepspeed.zero.GatheredParameters`` for the time it takes to copy them out (clones), so at most
      one module is materialised at a time.
    * ``module`` wrappers (DDP, DeepSpeed engine) are unwrapped.
    """
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    base, adapters = model, []
    if hasattr(model, "peft_config"):
        base = model.get_base_model()
        adapters = list(getattr(model, "active_adapters", None) or [model.active_adapter])
    lora_prefixes: list[str] = []
    seen: set[int] = (
        set()
    )  # tied weights (lm_head = embed_tokens) are yielded once, as named_parameters() does
    for mod_name, module in base.named_modules():
        if lora_prefixes and any(mod_name.startswith(p) for p in lora_prefixes):
            continue  # parts of a LoRA layer already yielded as one merged weight
        if adapters and hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            lora_prefixes.append(mod_name + ".")
            yield from _merged_lora_layer(mod_name, module, adapters)
            continue
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for _, p in own)
        if not own:
            continue
        with _gathered([p for _, p in own]) as gathered:
            for pname, p in own:
                full = f"{mod_name}.{pname}" if mod_name else pname
                if any(s in f".{full}" for s in _PEFT_SKIP):
                    continue
                yield _clean_name(full, adapters), (p.detach().clone() if gathered else p.detach())


def _merged_lora_layer(mod_name: str, module, adapters: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    if any(getattr(module, "use_dora", {}).get(a, False) for a in adapters):
        raise BackendError(
            f"{mod_name}: DoRA adapters cannot be merged into the vLLM engine's weights; use plain LoRA "
            "(model.lora without DoRA) or sampling.backend: transformers"
        )
    base_layer = module.get_base_layer()
    with _gathered(list(module.parameters())), torch.no_grad():
        weight = base_layer.weight.detach().clone()
        if not getattr(module, "merged", False) and not getattr(module, "disable_adapters", False):
            for a in adapters:
                if a in module.lora_A or a in getattr(module, "lora_embedding_A", {}):
                    weight += module.get_delta_weight(a).to(weight.dtype)
        yield _clean_name(f"{mod_name}.weight", adapters), weight
        if getattr(base_layer, "bias", None) is not None:
            yield _clean_name(f"{mod_name}.bias", adapters), base_layer.bias.detach().clone()


def _clean_name(name: str, adapters: list[str]) -> str:
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    for a in adapters:
        name = name.replace(f".modules_to_save.{a}.", ".")
    return name


@contextmanager
def _gathered(params: list[torch.nn.Parameter]):
    """Gather ZeRO-3-partitioned parameters for reading (yields True when it did); else do nothing."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield True
    else:
        with nullcontext():
            yield False
