"""Our DPO, conservative-DPO, IPO and KTO losses and gradients equal TRL 1.16's on identical inputs.

TRL has no callable that takes raw sequence log-probs: the loss maths lives inside
``DPOTrainer._compute_loss(self, model, inputs, return_outputs)`` and ``KTOTrainer._compute_loss(...)``,
which read log-probs from a model forward. The smallest honest harness runs those real methods, unbound,
with:

- ``self``: a ``SimpleNamespace`` holding only the attributes the method reads (``beta``, ``loss_types``,
  ``label_smoothing``, ``precompute_ref_logps=True`` so reference log-probs come from the batch, an
  identity ``accelerator.gather``/``gather_for_metrics`` for one process, a metrics dict), plus TRL's real
  ``KTOTrainer._compute_kl_logps`` bound to it;
- ``model``: a stub standing in for the causal LM's fused-LM-head forward. For a batch of sequences of
  width T it returns per-token log-probs of shape (N, T−1) that put each sequence's summed log-prob on its
  first completion position and zeros elsewhere (so TRL's ``.sum(dim=1)`` recovers exactly our inputs),
  plus zero entropy/logit/top-1 tensors that only feed TRL's logging.

Everything between the forward and the returned scalar (log-ratios, the loss branch, length
normalisation from ``completion_mask``, the KL reference point, the mean) is TRL's own code. Both sides
are compared as batch means, since TRL returns the reduced loss; gradients are taken w.r.t. the policy
log-probs the stub returns.

Notes found while reading TRL 1.16:
- ``loss_type="sigmoid"`` ignores ``label_smoothing`` (its help says label smoothing is for "robust" and
  "exo_pair"). The conservative-DPO formula −(1−ε)log σ(βh) − ε log σ(−βh) appears in TRL 1.16 only in
  the ``"aot"`` branch, which sorts log-ratios across the batch before applying it; with batch size 1 the
  sort is the identity, so ``aot`` at B = 1 is exactly cDPO. We compare per pair that way.
- IPO in TRL always divides each log-ratio by the number of completion tokens (``completion_mask`` sum,
  clamped at 1); our ``ipo_loss`` does so when lengths are passed.
- KTO's mismatched completions are rotated by TRL at dataset build time (x_j gets y_{j−1}); here the KL
  log-probs are passed in directly, so only z_0's arithmetic is compared.
"""

from collections import defaultdict
from types import MethodType, SimpleNamespace

import pytest
import torch

from alignment.losses import dpo_loss, ipo_loss, kto_loss, kto_reference_point

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
trl_kto = pytest.importorskip("trl.trainer.kto_trainer")

F64 = torch.float64
ATOL = 1e-9


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def _accelerator() -> SimpleNamespace:
    identity = lambda x: x  # noqa: E731 - one process: gathering is the identity
    return SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity)


def _trainer_self(**attrs) -> SimpleNamespace:
    base = dict(
        model=SimpleNamespace(training=True),
        accelerator=_accelerator(),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        precompute_ref_logps=True,
        aux_loss_enabled=False,
        ref_model=None,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    base.update(attrs)
    return SimpleNamespace(**base)


def _per_token(seq_logps: torch.Tensor, width: int) -> torch.Tensor:
    """(N,) summed log-probs → (N, width − 1) per-token log-probs whose row sums are the inputs."""
    pad = torch.zeros(seq_logps.shape[0], width - 2, dtype=seq_logps.dtype)
    return torch.cat([seq_logps.unsqueeze(1), pad], dim=1)


def _forward_output(seq_logps: torch.Tensor, width: int) -> SimpleNamespace:
    n = seq_logps.shape[0]
    zeros = torch.zeros(n, width - 1, dtype=seq_logps.dtype)
    return SimpleNamespace(
        log_probs=_per_token(seq_logps, width),
        entropy=zeros,
        mean_logits=zeros,
        is_top1=torch.zeros(n, width - 1, dtype=torch.bool),
    )


def _completion_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Position 0 is the prompt; positions 1..L are completion tokens."""
    pos = torch.arange(width).unsqueeze(0)
    return ((pos >= 1) & (pos <= lengths.unsqueeze(1))).long()


def _trl_dpo(pc, pr, rc, rr, *, loss_type, beta, label_smoothing=0.0, chosen_lengths=None, rejected_lengths=None):
    b = pc.shape[0]
    chosen_lengths = torch.full((b,), 3) if chosen_lengths is None else chosen_lengths
    rejected_lengths = torch.full((b,), 3) if rejected_lengths is None else rejected_lengths
    lengths = torch.cat([chosen_lengths, rejected_lengths])  # TRL batches are [chosen; rejected]
    width = int(lengths.max()) + 2
    inputs = {
        "input_ids": torch.zeros(2 * b, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, width, dtype=torch.long),
        "completion_mask": _completion_mask(lengths, width),
        "ref_chosen_logps": rc,
        "ref_rejected_logps": rr,
    }
    policy = torch.cat([pc, pr])
    model = lambda **kw: _forward_output(policy, width)  # noqa: E731
    fake = _trainer_self(
        beta=beta,
        label_smoothing=label_smoothing,
        loss_types=[loss_type],
        loss_weights=[1.0],
        f_divergence_type="reverse_kl",
        ld_alpha=None,
        use_weighting=False,
    )
    loss = trl_dpo.DPOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    return loss, fake._metrics["train"]


def _leaves(b: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pc, pr = (torch.randn(b, dtype=F64, generator=g).mul(4).sub(20) for _ in range(2))
    rc, rr = (torch.randn(b, dtype=F64, generator=g).mul(4).sub(20) for _ in range(2))
    return [pc.requires_grad_(), pr.requires_grad_(), rc, rr]


def _loss_and_grads(loss: torch.Tensor, leaves: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (loss.detach(), *torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_sigmoid_matches_trl(beta):
    pc, pr, rc, rr = _leaves(8, seed=0)
    trl_loss, metrics = _trl_dpo(pc, pr, rc, rr, loss_type="sigmoid", beta=beta)
    ours = dpo_loss(pc, pr, rc, rr, beta=beta)
    for got, want in zip(_loss_and_grads(ours.losses.mean(), [pc, pr]), _loss_and_grads(trl_loss, [pc, pr])):
        close(got, want)
    assert ours.chosen_rewards.mean().item() == pytest.approx(metrics["rewards/chosen"][-1], abs=ATOL)
    assert ours.margins.mean().item() == pytest.approx(metrics["rewards/margins"][-1], abs=ATOL)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_conservative_dpo_matches_trl_aot_at_batch_one(label_smoothing):
    pc, pr, rc, rr = _leaves(6, seed=1)
    for i in range(6):
        args = [x[i : i + 1] for x in (pc, pr, rc, rr)]
        trl_loss, _ = _trl_dpo(*args, loss_type="aot", beta=0.2, label_smoothing=label_smoothing)
        ours = dpo_loss(*args, beta=0.2, label_smoothing=label_smoothing).losses.mean()
        for got, want in zip(_loss_and_grads(ours, [pc, pr]), _loss_and_grads(trl_loss, [pc, pr])):
            close(got, want)


def test_ipo_matches_trl_length_normalised():
    pc, pr, rc, rr = _leaves(8, seed=2)
    chosen_lengths = torch.tensor([1, 2, 3, 5, 8, 13, 4, 7])
    rejected_lengths = torch.tensor([9, 1, 4, 4, 2, 6, 11, 3])
    for beta in (0.1, 0.5):
        trl_loss, _ = _trl_dpo(
            pc, pr, rc, rr, loss_type="ipo", beta=beta,
            chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths,
        )
        ours = ipo_loss(
            pc, pr, rc, rr, beta=beta, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths
        ).losses.mean()
        for got, want in zip(_loss_and_grads(ours, [pc, pr]), _loss_and_grads(trl_loss, [pc, pr])):
            close(got, want)


def _trl_kto(policy, ref, labels, policy_kl, ref_kl, *, beta, desirable_weight, undesirable_weight):
    b, width = policy.shape[0], 5
    input_ids, kl_input_ids = torch.zeros(b, width, dtype=torch.long), torch.ones(b, width, dtype=torch.long)
    mask = _completion_mask(torch.full((b,), 3), width)
    inputs = {
        "label": labels,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": mask,
        "KL_input_ids": kl_input_ids,
        "KL_attention_mask": torch.ones_like(kl_input_ids),
        "KL_completion_mask": mask,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }

    def model(*, input_ids, **kw):  # the KL forward is the one fed KL_input_ids
        return _forward_output(policy_kl if input_ids is kl_input_ids else policy, width)

    fake = _trainer_self(
        beta=beta,
        loss_type="kto",
        calculate_KL=True,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    fake._compute_kl_logps = MethodType(trl_kto.KTOTrainer._compute_kl_logps, fake)  # TRL's own KL forward
    loss = trl_kto.KTOTrainer._compute_loss(fake, model, inputs, return_outputs=False)
    return loss, fake._metrics["train"]


@pytest.mark.parametrize(
    "kl_offset, weights", [(0.0, (1.0, 1.0)), (-3.0, (1.0, 1.0)), (0.5, (1.33, 1.0)), (2.0, (1.0, 2.5))]
)
def test_kto_matches_trl(kl_offset, weights):
    """kl_offset shifts the mismatched log-ratios: −3 drives their mean below 0, exercising the clamp."""
    g = torch.Generator().manual_seed(3)
    b = 8
    policy = torch.randn(b, dtype=F64, generator=g).mul(3).sub(15).requires_grad_()
    ref = torch.randn(b, dtype=F64, generator=g).mul(3).sub(15)
    ref_kl = torch.randn(b, dtype=F64, generator=g).mul(3).sub(15)
    policy_kl = (ref_kl + kl_offset + torch.randn(b, dtype=F64, generator=g)).requires_grad_()
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    trl_loss, metrics = _trl_kto(
        policy, ref, labels, policy_kl, ref_kl, beta=0.1, desirable_weight=weights[0], undesirable_weight=weights[1]
    )
    z0 = kto_reference_point(policy_kl, ref_kl)
    assert z0.item() == pytest.approx(metrics["kl"][-1], abs=ATOL)
    if kl_offset < 0:
        assert z0.item() == 0.0
    ours = kto_loss(
        policy, ref, labels.bool(), z0, beta=0.1, desirable_weight=weights[0], undesirable_weight=weights[1]
    ).losses.mean()
    close(ours.detach(), trl_loss.detach())
    close(torch.autograd.grad(ours, policy)[0], torch.autograd.grad(trl_loss, policy)[0])
    assert z0.grad_fn is None
