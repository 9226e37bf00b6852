"""`evaluation.backend: vllm` agrees with the transformers backend within sampling error.

π is the tiny model with seeded noise on every weight and π_ref the tiny model itself, so KL, win rate and
rewards are all away from their trivial values. Both evaluations sample through one vLLM engine (each side
pushes its weights before sampling) or through `generate`; the KL is scored by transformers either way.
Each difference must be within 4 combined standard errors of the per-prompt means.
"""

from __future__ import annotations

import pytest
import torch

from alignment.eval.gold import EvalSettings, evaluate
from alignment.eval.policy import make_policy
from alignment.rewards.base import FunctionReward

WITHIN = 4.0  # standard errors


def distinct_words(prompts: list[str], texts: list[str]) -> list[float]:
    return [float(len(set(text.split()))) for text in texts]


def per_prompt_mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean of (P, n) values and its standard error, prompts as the independent units."""
    per_prompt = values.double().mean(dim=1)
    return float(per_prompt.mean()), float(per_prompt.std() / len(per_prompt) ** 0.5)


@pytest.mark.vllm
def test_vllm_and_transformers_backends_agree(vllm_sampler, tiny_model_dir, tiny_tokenizer, prompts_for):
    from test_eval_kl import perturbed  # same directory (pytest prepends it to sys.path)
    from transformers import AutoModelForCausalLM

    reference_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy_model = perturbed(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), scale=0.03)
    settings = EvalSettings(num_prompts=96, samples_per_prompt=4, max_new_tokens=16, seed=11)
    reward = FunctionReward(distinct_words, "distinct_words")
    prompts = prompts_for(96, seed=2)
    results = {}
    for backend in ("transformers", "vllm"):
        policy, reference = (
            make_policy(model, tiny_tokenizer, backend=backend, model_dir=str(tiny_model_dir))
            for model in (policy_model, reference_model)
        )
        results[backend] = evaluate(policy, reference, prompts, reward, settings)

    hf, vl = results["transformers"]["_samples"], results["vllm"]["_samples"]
    assert results["transformers"]["kl"] > 0.05  # π ≠ π_ref: agreement is not 0 == 0
    for key in ("kl", "reward", "reference_reward"):
        (mean_hf, se_hf), (mean_vl, se_vl) = per_prompt_mean_and_se(hf[key]), per_prompt_mean_and_se(vl[key])
        assert abs(mean_hf - mean_vl) <= WITHIN * (se_hf**2 + se_vl**2) ** 0.5, (key, mean_hf, mean_vl)
    wins = {
        backend: (
            r["_samples"]["reward"][:, :, None] > r["_samples"]["reference_reward"][:, None, :]
        ).double()
        + 0.5
        * (r["_samples"]["reward"][:, :, None] == r["_samples"]["reference_reward"][:, None, :]).double()
        for backend, r in results.items()
    }  # (P, n, n) pairwise outcomes, as `pairwise_win_rate` counts them
    (w_hf, se_hf), (w_vl, se_vl) = (per_prompt_mean_and_se(w.flatten(1)) for w in wins.values())
    assert w_hf == pytest.approx(results["transformers"]["win_rate"])
    assert abs(w_hf - w_vl) <= WITHIN * (se_hf**2 + se_vl**2) ** 0.5
