"""`eval_rewards.png`: what the final evaluation found, and how the run got there.

Left, the reward histograms of policy and reference samples. Right, the run's path in the (KL, win rate)
plane: each evaluation of `eval_history.jsonl` labelled with its step, then the final evaluation. A good
run climbs above the coin-flip line (win rate 0.5) while staying at small KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_eval(
    path: Path,
    result: dict[str, Any],
    policy_rewards: Sequence[float],
    reference_rewards: Sequence[float],
    history: Sequence[dict[str, Any]],
) -> None:
    """Write the two-panel figure to `path` (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, path_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    hist.hist(
        [list(reference_rewards), list(policy_rewards)], bins=30, label=["reference", "policy"], alpha=0.8
    )
    hist.set_xlabel(f"{result['reward']} reward")
    hist.set_ylabel("samples")
    hist.set_title(f"win rate {result['win_rate']:.3f}, KL {result['kl']:.3f}")
    hist.legend()

    path_ax.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="reference (coin flip)")
    if history:
        kls, wins = [row["kl"] for row in history], [row["win_rate"] for row in history]
        path_ax.plot(kls, wins, marker="o", label="during training")
        for row in history:
            path_ax.annotate(
                str(row["step"]), (row["kl"], row["win_rate"]), textcoords="offset points", xytext=(4, 4)
            )
    path_ax.plot([result["kl"]], [result["win_rate"]], marker="*", markersize=14, linestyle="", label="final")
    path_ax.set_xlabel("KL(π‖π_ref)")
    path_ax.set_ylabel("win rate vs reference")
    path_ax.set_title("win rate vs KL over training")
    path_ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
