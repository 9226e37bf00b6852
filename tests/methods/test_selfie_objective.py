"""Selfie's refined DPO: the loss against its formula by hand, τ's rolling window, the warm-up, and the
DND confidence against a naive per-sequence loop over an extrapolated model with π ≠ π_ref."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.methods.objective import StepContext
from alignment.methods.selfie import ConfidenceThreshold, SelfieIterationParams, SelfieObjective
from alignment.policy.batching import build_packed_batch
from alignment.policy.logps import completion_logits, gather_logps, sum_per_sequence

F64 = torch.float64


def params(**kw) -> SelfieIterationParams:
    return SelfieIterationParams(judge_reference="toy-base", **kw)


def context(progress: float, training: bool = True, **extra) -> StepContext:
    return StepContext(batch={}, training=training, step=int(progress * 100), total_steps=100, **extra)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_threshold_is_zero_until_the_window_fills_then_the_quantile():
    t = ConfidenceThreshold(quantile=0.1, window=5)
    t.update(torch.tensor([5.0, 1.0, 3.0, 2.0]))
    assert t.tau == 0.0  # 4 of 5
    t.update(torch.tensor([4.0]))
    assert t.tau == pytest.approx(1.5)  # ⌊0.1·5⌋ = 0: the mean of the smallest two of 1..5
    t.update(torch.tensor([10.0, 11.0]))  # the window keeps the last five: 3, 2, 4, 10, 11
    assert t.tau == pytest.approx(2.5)
    fifty = ConfidenceThreshold(quantile=0.1, window=50)
    fifty.update(torch.arange(50, 0, -1, dtype=torch.float64))  # 50 … 1
    assert fifty.tau == pytest.approx(6.5)  # the code's rule: the 6th and 7th smallest


def test_loss_is_the_smoothed_formula_with_confidence_from_the_window():
    beta, alpha = 0.5, 0.1
    objective = SelfieObjective(params(beta=beta, alpha=alpha, tau_window=4))
    objective.threshold.update(torch.tensor([0.3, 0.1, 0.0, 0.4]))  # full window: τ = (0 + 0.1) / 2
    policy = torch.tensor([[-2.0, -3.0], [-4.0, -3.5], [-1.0, -1.3]], dtype=F64)
    ref = torch.tensor([[-2.5, -2.5], [-4.0, -4.0], [-1.1, -1.2]], dtype=F64)
    out = objective.loss(policy, ref, context(progress=0.5))
    want, smoothed = [], 0
    for (pw, pl), (rw, rl) in zip(policy.tolist(), ref.tolist()):
        delta = (pw - pl) - (rw - rl)
        confident = beta * delta > 0.05  # no DND: z = βΔ, here 0.5, −0.25 and 0.1: z = βΔ of the policy itself
        weight = 0.0 if confident else alpha
        smoothed += not confident
        want.append(-(1 - weight) * log_sigmoid(beta * delta) - weight * log_sigmoid(-beta * delta))
    assert out.loss.item() == pytest.approx(sum(want) / 3, abs=1e-12)
    assert smoothed == 1 and out.metrics["selfie/smoothed"].item() == pytest.approx(1 / 3)
    assert out.metrics["selfie/tau"].item() == pytest.approx(0.05)
    # updated after the loss: the window now ends with this batch's confidences
    assert list(objective.threshold.values)[-3:] == pytest.approx([beta * 1.0, beta * -0.5, beta * 0.2])


def test_warmup_evaluation_and_no_refinement_train_plain_dpo():
    policy = torch.tensor([[-2.0, -3.0], [-4.0, -3.5]], dtype=F64)
    ref = torch.tensor([[-2.5, -2.5], [-4.0, -4.0]], dtype=F64)
    plain = sum(-log_sigmoid(0.1 * d) for d in (1.0, -0.5)) / 2
    for p, progress in ((params(), 0.1), (params(refinement=False), 0.9)):
        objective = SelfieObjective(p)
        objective.threshold.update(torch.full((50,), 5.0))  # τ = 5: every pair would be smoothed
        out = objective.loss(policy, ref, context(progress))
        assert out.loss.item() == pytest.approx(plain, abs=1e-12)
        assert out.metrics["selfie/smoothed"].item() == 0
    objective = SelfieObjective(params())
    objective.loss(policy, ref, context(0.9, training=False))
    assert len(objective.threshold.values) == 0  # evaluation never moves τ


def test_state_round_trips_the_window():
    a = SelfieObjective(params(tau_window=3))
    a.threshold.update(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    b = SelfieObjective(params(tau_window=3))
    b.load_state_dict(a.state_dict())
    assert list(b.threshold.values) == [2.0, 3.0, 4.0] and b.threshold.tau == a.threshold.tau


def test_dnd_confidence_matches_a_naive_extrapolated_model(tiny_model, tiny_model_dir, tiny_tokenizer):
    """z from the trainer's logits = β[(log π̃_w − log π̃_l) − (log π_ref,w − log π_ref,l)] with π̃ the softmax of
    (1 + λ)·h_θ − λ·h_ref, each sequence scored alone and unpadded."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    policy = tiny_model
    with torch.no_grad():  # π ≠ π_ref
        for p in policy.parameters():
            p.add_(0.02 * torch.randn_like(p))
    lam, beta = 0.5, 0.3
    tok = tiny_tokenizer
    prompts = [tok("the cat")["input_ids"], tok("a big red dog sees")["input_ids"]]
    pairs = [
        [
            tok(" runs.", add_special_tokens=False)["input_ids"],
            tok(" eats a tree.", add_special_tokens=False)["input_ids"],
        ],
        [
            tok(" yes.", add_special_tokens=False)["input_ids"],
            tok(" no then.", add_special_tokens=False)["input_ids"],
        ],
    ]
    batch = build_packed_batch(prompts, pairs, pad_token_id=tok.pad_token_id, pack_length=64)
    objective = SelfieObjective(params(beta=beta, dnd_lambda=lam))
    assert objective.needs_token_logits
    with torch.no_grad():
        ctx = StepContext(
            batch={"sequences": batch},
            training=True,
            policy_token_logits=completion_logits(policy, batch),
            reference_token_logits=completion_logits(reference, batch),
        )
        ref_logps = sum_per_sequence(gather_logps(ctx.reference_token_logits, batch.target_ids), batch)
        policy_logps = sum_per_sequence(gather_logps(ctx.policy_token_logits, batch.target_ids), batch)
        z = objective.confidence(policy_logps, ref_logps, ctx)

    def naive(model_logits, prompt, completion):
        ids = torch.tensor([prompt + completion])
        return model_logits(ids)[0, len(prompt) - 1 : -1].double()

    want = []
    with torch.no_grad():
        for prompt, (yw, yl) in zip(prompts, pairs):
            terms = []
            for y in (yw, yl):
                h = naive(lambda ids: policy(input_ids=ids).logits, prompt, y)
                h_ref = naive(lambda ids: reference(input_ids=ids).logits, prompt, y)
                target = torch.tensor(y)[:, None]
                mixed = torch.log_softmax((1 + lam) * h - lam * h_ref, -1).gather(-1, target).sum()
                terms.append((mixed, torch.log_softmax(h_ref, -1).gather(-1, target).sum()))
            (mw, rw), (ml, rl) = terms
            want.append(beta * ((mw - ml) - (rw - rl)).item())
    torch.testing.assert_close(z.double(), torch.tensor(want, dtype=F64), rtol=0, atol=1e-4)
    # and DND differs from the plain policy's confidence here (π ≠ π_ref)
    plain = beta * ((policy_logps[:, 0] - policy_logps[:, 1]) - (ref_logps[:, 0] - ref_logps[:, 1]))
    assert (z - plain).abs().max() > 1e-3
