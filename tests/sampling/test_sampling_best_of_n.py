from types import SimpleNamespace

import pytest
import torch

from alignment.errors import RecipeError
from alignment.sampling import SamplingParams, best_of_n, build_sampler, sampling_params_from_config
from alignment.sampling.hf import TransformersSampler


class LengthReward:
    """Longer completions score higher; records what it was asked."""

    def score(self, prompts, completions):
        self.calls = (list(prompts), list(completions))
        return torch.tensor([float(len(c)) for c in completions], dtype=torch.float64)


def test_best_and_worst_of_n(tiny_model, tiny_tokenizer, prompts_for):
    sampler = TransformersSampler(tiny_model, tiny_tokenizer)
    prompts = prompts_for(4)
    reward = LengthReward()
    params = SamplingParams(n=1, max_new_tokens=16, seed=3)
    best = best_of_n(sampler, reward, prompts, 5, params)
    assert best.all_rewards.shape == (4, 5) and best.rewards.shape == (4,) and best.chosen.shape == (4,)
    assert reward.calls[0] == best.completions.flat_prompts()
    for p in range(4):
        lengths = [len(t) for t in best.completions.texts[p]]
        assert best.texts[p] == best.completions.texts[p][int(best.chosen[p])]
        assert best.rewards[p] == max(lengths)
    worst = best_of_n(sampler, reward, prompts, 5, params, worst=True)
    assert worst.completions.token_ids == best.completions.token_ids  # same seed, same samples
    assert all(worst.rewards[p] == min(len(t) for t in worst.completions.texts[p]) for p in range(4))


def test_sampling_params_from_config():
    cfg = SimpleNamespace(
        backend="transformers",
        temperature=0.7,
        top_p=0.9,
        top_k=5,
        max_new_tokens=20,
        n=4,
        seed=None,
        batch_size=8,
    )
    p = sampling_params_from_config(cfg)
    assert p == SamplingParams(n=4, temperature=0.7, top_p=0.9, top_k=5, max_new_tokens=20, seed=None)
    assert sampling_params_from_config(cfg, n=1, temperature=0.0, logprobs=True).n == 1
    with pytest.raises(TypeError):
        sampling_params_from_config(cfg, nn=1)


def test_build_sampler(tiny_model, tiny_tokenizer, tiny_model_dir):
    cfg = SimpleNamespace(backend="transformers", batch_size=8)
    sampler = build_sampler(cfg, tiny_model, tiny_tokenizer, tiny_model_dir)
    assert (
        isinstance(sampler, TransformersSampler) and sampler.batch_size == 8 and sampler.model is tiny_model
    )
    with pytest.raises(RecipeError, match="sampling.backend"):
        build_sampler(SimpleNamespace(backend="vlm"), tiny_model, tiny_tokenizer, tiny_model_dir)


def test_missing_vllm_is_a_backend_error(monkeypatch, tmp_path):
    import sys

    from alignment.errors import BackendError
    from alignment.sampling.vllm import VLLMSampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(BackendError, match="sampling.backend: transformers"):
        VLLMSampler(tmp_path)
