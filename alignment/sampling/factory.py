"""Recipe `sampling:` section -> a `Sampler` and `SamplingParams`.

The config is duck-typed (fields: backend, temperature, top_p, top_k, max_new_tokens, n, seed, stop,
batch_size, and vllm.{gpu_memory_utilization, max_model_len, enforce_eager, kv_cache_space_gib}), so
this module does not depend on the recipe schema. vLLM is imported only when the backend asks for it.
"""

from __future__ import annotations

from dataclasses import fields

from alignment.errors import RecipeError
from alignment.sampling.base import Sampler, SamplingParams

BACKENDS = ("transformers", "vllm")


def sampling_params_from_config(cfg, **overrides) -> SamplingParams:
    """`SamplingParams` from the config's same-named fields (missing ones keep their defaults), then
    ``overrides`` (e.g. ``n=1, temperature=0`` for evaluation). ``stop`` (a list in a recipe) becomes a
    tuple."""
    names = {f.name for f in fields(SamplingParams)}
    values = {name: getattr(cfg, name) for name in names if getattr(cfg, name, None) is not None}
    if getattr(cfg, "seed", 0) is None:
        values["seed"] = None
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown SamplingParams field(s): {sorted(unknown)}")
    values.update(overrides)
    if "stop" in values:
        values["stop"] = tuple(values["stop"])
    return SamplingParams(**values)


def build_sampler(sampling_config, model, tokenizer, model_dir) -> Sampler:
    """The backend named by ``sampling_config.backend``.

    ``transformers`` wraps ``model`` (the live policy: no weight pushes needed); ``vllm`` starts (or
    reuses) an engine from ``model_dir``, the checkpoint the policy was loaded from, and the trainer
    pushes `model_state_for_sync(policy)` into it after each optimizer step.
    """
    backend = getattr(sampling_config, "backend", "transformers")
    if backend == "transformers":
        from alignment.sampling.hf import TransformersSampler

        return TransformersSampler(
            model, tokenizer, batch_size=getattr(sampling_config, "batch_size", 64) or 64
        )
    if backend == "vllm":
        from alignment.models import resolve_model_path
        from alignment.sampling.vllm import VLLMSampler

        v = getattr(sampling_config, "vllm", None)
        seed = getattr(sampling_config, "seed", 0)
        return VLLMSampler(
            resolve_model_path(str(model_dir)),  # an alias such as toy-base names a packaged directory
            max_model_len=getattr(v, "max_model_len", None),
            gpu_memory_utilization=getattr(v, "gpu_memory_utilization", 0.3),
            enforce_eager=getattr(v, "enforce_eager", True),
            kv_cache_space_gib=getattr(v, "kv_cache_space_gib", 1.0),
            seed=seed if seed is not None else 0,
        )
    raise RecipeError("sampling.backend", f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
