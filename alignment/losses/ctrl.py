"""InfAlign / CTRL reward calibration and transforms (Balashankar et al., arXiv:2412.19792; spec §2 steps 1-2).

Shapes: B = number of scored completions, M = reference samples per prompt; ``rewards`` ``(B,)``,
``reference_rewards`` ``(B, M)`` (row b holds the rewards of M samples from π_ref for b's prompt).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "TRANSFORMS",
    "beta_for_kl",
    "calibrated_reward",
    "exp_transform",
    "identity_transform",
    "neg_exp_transform",
    "normalized_transform",
    "pick_t",
    "tilted_curve",
]


def calibrated_reward(
    rewards: Tensor, reference_rewards: Tensor, reference_mask: Tensor | None = None
) -> Tensor:
    """Ĉ(x, y) = (1/M)·Σ_m (1[r(x,z_m) < r(x,y)] + ½·1[r(x,z_m) = r(x,y)]), ``(B,)`` in [0, 1].

    The Monte-Carlo estimate of P_{z∼π_ref}[r(z) < r(y)] + ½P[r(z) = r(y)] (spec §2 step 1). Not
    differentiable (a rank); ``reference_mask`` ``(B, M)`` bool drops missing reference samples per row.
    """
    r = rewards.unsqueeze(-1)
    score = (reference_rewards < r).to(torch.float64) + 0.5 * (reference_rewards == r).to(torch.float64)
    if reference_mask is None:
        out = score.mean(dim=-1)
    else:
        mask = reference_mask.to(torch.bool)
        out = (score * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return out.to(rewards.dtype if rewards.is_floating_point() else torch.float64)


def identity_transform(u: Tensor) -> Tensor:
    """Φ(u) = u: exactly optimal for the standard win rate (spec §2 step 2)."""
    return u


def exp_transform(u: Tensor, t: float) -> Tensor:
    """Φ_t(u) = exp(t·u), t > 0: Best-of-N (upper-tail emphasis). Ranges over [1, eᵗ]; rescale β accordingly."""
    return torch.exp(t * u)


def neg_exp_transform(u: Tensor, t: float) -> Tensor:
    """Φ_t(u) = −exp(−t·u), t > 0: Worst-of-N / BoN jailbreaking (lower tail); increasing in u."""
    return -torch.exp(-t * u)


TRANSFORMS = ("identity", "bon", "won")


def normalized_transform(u: Tensor, kind: str, t: float = 1.0) -> Tensor:
    """Φ̃(u) = (Φ(u) − Φ(0)) / (Φ(1) − Φ(0)) ∈ [0, 1] for Φ = identity, exp(t·u) (`bon`) or −exp(−t·u) (`won`).

    An increasing affine map of Φ: the KL-regularised optimum π ∝ π_ref·exp(Φ̃/β) is the one of Φ with
    β·(Φ(1) − Φ(0)), so normalising only rescales β (spec pitfall 3: eᵗ-sized rewards would dwarf any default
    KL coefficient), and every transform's β lives on the identity's scale."""
    if kind == "identity":
        return u
    if kind == "bon":
        return torch.expm1(t * u) / math.expm1(t)
    if kind == "won":
        return -torch.expm1(-t * u) / -math.expm1(-t)
    raise ValueError(f"unknown transform {kind!r}; choose one of {', '.join(TRANSFORMS)}")


# --- the analytic tool (spec §3): the optimal tilted policy's (KL, win rate) in closed form ------------------


def _grid(kind: str, t: float, points: int = 20001):
    """u on [0, 1] and Φ̃(u) there, as numpy arrays."""
    u = torch.linspace(0.0, 1.0, points, dtype=torch.float64)
    return u.numpy(), normalized_transform(u, kind, t).numpy()


def _curve(u, phi, beta: float, n: int) -> dict[str, float]:
    import numpy as np

    logits = phi / beta
    w = np.exp(logits - logits.max())
    z = np.trapezoid(w, u)
    q = w / z
    cdf = np.concatenate([[0.0], np.cumsum((q[1:] + q[:-1]) / 2 * np.diff(u))])
    cdf = np.clip(cdf / cdf[-1], 0.0, 1.0)
    return {
        "kl": float(np.trapezoid(q * logits, u) - (np.log(z) + logits.max())),
        "win_rate": float(np.trapezoid(q * u, u)),
        f"best_of_{n}_win_rate": float(np.trapezoid(n * cdf ** (n - 1) * q * u**n, u)),
        f"worst_of_{n}_win_rate": float(np.trapezoid(n * (1 - u) ** (n - 1) * (1 - cdf) ** n, u)),
    }


def tilted_curve(kind: str, t: float, beta: float, n: int) -> dict[str, float]:
    """KL and win rates of π* ∝ π_ref·exp(Φ̃(u)/β), u = C(x, y) ~ Uniform[0, 1] under π_ref (spec §3).

    π* puts density q(u) = exp(Φ̃(u)/β)/Z on the calibrated reward, with CDF Q, whatever the prompt or the
    reward: KL = E_q[Φ̃/β] − log Z; win rate E_q[u]; best-of-n ∫ n·Q^{n−1}·q·uⁿ du (the max of n draws from q
    beats the max of n uniforms); worst-of-n ∫ n·(1−u)^{n−1}·(1−Q)ⁿ du (the min of n draws from q beats the
    min of n uniforms)."""
    return _curve(*_grid(kind, t), beta, n)


def beta_for_kl(kind: str, t: float, kl: float, n: int = 1) -> float:
    """The β at which the tilted optimum of Φ̃ has KL(π*‖π_ref) = `kl` (KL falls as β grows; bisection on log β)."""
    u, phi = _grid(kind, t)
    lo, hi = math.log(1e-4), math.log(1e3)
    for _ in range(60):
        mid = (lo + hi) / 2
        if _curve(u, phi, math.exp(mid), n)["kl"] > kl:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2)


def pick_t(
    kind: str, n: int, kl: float, candidates: tuple[float, ...] = ()
) -> tuple[float, dict[str, float]]:
    """The t whose tilted optimum at KL budget `kl` has the highest best-of-n (`bon`) or worst-of-n (`won`)
    win rate against π_ref: the paper's analytic choice of t for a target N. Returns (t, that point's curve).
    Candidates: 30 values log-spaced over [0.1, 30] by default."""
    if kind not in ("bon", "won"):
        raise ValueError(f"t applies to the bon and won transforms, not {kind!r}")
    if n < 1 or kl <= 0:
        raise ValueError(f"need n >= 1 and kl > 0, got n={n}, kl={kl}")
    key = f"{'best' if kind == 'bon' else 'worst'}_of_{n}_win_rate"
    candidates = candidates or tuple(float(x) for x in torch.logspace(-1, math.log10(30), 30).tolist())
    points = [(t, tilted_curve(kind, t, beta_for_kl(kind, t, kl, n), n)) for t in candidates]
    return max(points, key=lambda point: point[1][key])
