"""Sampling: the `Sampler` protocol and its backends (transformers `generate`, vLLM).

vLLM is never imported here: `alignment.sampling.vllm` imports it lazily when an engine is built.
"""

from alignment.sampling.base import Completions, Sampler, SamplingParams
from alignment.sampling.best_of_n import BestOfN, best_of_n
from alignment.sampling.factory import build_sampler, sampling_params_from_config
from alignment.sampling.vllm import model_state_for_sync  # no vllm import: that happens in VLLMSampler

__all__ = [
    "BestOfN",
    "Completions",
    "Sampler",
    "SamplingParams",
    "best_of_n",
    "build_sampler",
    "model_state_for_sync",
    "sampling_params_from_config",
]
