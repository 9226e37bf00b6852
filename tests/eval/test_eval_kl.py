"""Evaluation KL against a naive per-prefix loop, with π ≠ π_ref, tempered sampling and prompt templates.

The naive loop reads each prefix's next-token distributions (rendered prompt + the first t completion
tokens) from one unpadded forward per sample and side, and sums KL(π_T(·|prefix) ‖ π_ref,T(·|prefix)) over t
and over the vocabulary in plain Python, with π_T ∝ π^(1/T): the KL of the distributions the evaluation
actually sampled from. It shares no code with the library's batched computation (padding, target
positions, `sequence_kl`).
"""

from __future__ import annotations

import pytest
import torch

from alignment.eval.gold import kl_on_samples
from alignment.eval.policy import make_policy
from alignment.sampling.base import SamplingParams

KL_ATOL = 1e-4  # float32 logits, sums over <= 12 tokens (observed ~1e-6)


def perturbed(model, *, scale: float = 0.05, seed: int = 0):
    """π: the same network with seeded Gaussian noise on every weight (π ≠ π_ref everywhere)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


@torch.no_grad()
def next_token_logprobs(side, prompt: str, completion: list[int], temperature: float) -> torch.Tensor:
    """(T, V) log π_T(·|prefix_t) for t = 0..T-1: one unpadded forward of rendered prompt + completion; by
    causality row len(prompt)+t-1 sees exactly prefix t."""
    prompt_ids = side.prompt_ids([prompt])[0]
    logits = side.scorer(torch.tensor([prompt_ids + completion])).logits[0].double()
    return torch.log_softmax(logits[len(prompt_ids) - 1 : -1] / temperature, dim=-1)


def naive_kl_and_ratio(policy, reference, prompt: str, completion: list[int], temperature: float):
    """Σ_t KL(π_T ‖ π_ref,T) and Σ_t log π_T(y_t)/π_ref,T(y_t), a plain loop over the prefixes."""
    logp = next_token_logprobs(policy, prompt, completion, temperature)
    logq = next_token_logprobs(reference, prompt, completion, temperature)
    kl = ratio = 0.0
    for t, token in enumerate(completion):
        kl += sum(float(p.exp() * (p - q)) for p, q in zip(logp[t], logq[t]))
        ratio += float(logp[t, token] - logq[t, token])
    return kl, ratio


@pytest.mark.parametrize(
    ("temperature", "template"),
    [(1.0, None), (0.5, None), (1.0, "Q: {prompt} A:")],
    ids=["T=1", "T=0.5", "policy-template"],
)
def test_kl_matches_a_naive_per_prefix_loop(
    tiny_model_dir, tiny_tokenizer, prompts_for, temperature, template
):
    from transformers import AutoModelForCausalLM

    reference_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    policy_model = perturbed(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    policy = make_policy(policy_model, tiny_tokenizer, template=template)
    reference = make_policy(reference_model, tiny_tokenizer)
    params = SamplingParams(n=2, temperature=temperature, max_new_tokens=12, seed=3)
    samples = policy.generate(prompts_for(6, seed=5), params)

    kl, ratio, implicit = kl_on_samples(policy, reference, samples, temperature=temperature, batch_size=4)

    assert kl.shape == ratio.shape == (6, 2)
    want = torch.tensor(
        [
            [naive_kl_and_ratio(policy, reference, p, ids, temperature) for ids in per]
            for p, per in zip(samples.prompts, samples.token_ids)
        ],
        dtype=torch.float64,
    )  # (P, n, 2): KL, log-ratio
    torch.testing.assert_close(kl, want[..., 0], rtol=0, atol=KL_ATOL)
    torch.testing.assert_close(ratio, want[..., 1], rtol=0, atol=KL_ATOL)
    assert kl.min() > 100 * KL_ATOL  # π ≠ π_ref on every sample: the check is not 0 == 0
    untempered_kl, untempered_ratio, _ = kl_on_samples(
        policy, reference, samples, temperature=1.0, batch_size=4
    )
    assert torch.equal(implicit, untempered_ratio)  # the temperature-1 ratios of the same pass, bit for bit
    if temperature != 1.0:  # the untempered KL of the same samples is another number: the test can tell
        assert (untempered_kl - kl).abs().max() > 100 * KL_ATOL
        assert (untempered_ratio - ratio).abs().max() > 100 * KL_ATOL
