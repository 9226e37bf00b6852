"""`eval_rewards.png`: what the final evaluation found, and how the run got there (and `eval_best_of_n.png`,
the best-/worst-of-N win rates by N, for evaluations at several N).

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
    title: str = "",
) -> None:
    """Write the two-panel figure to `path` (matplotlib's Agg backend: no display needed); `title` names the
    run (its method and directory)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, path_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    hist.hist(
        [list(reference_rewards), list(policy_rewards)], bins=30, label=["reference", "policy"], alpha=0.8
    )
    for values, color, name in ((reference_rewards, "C0", "reference"), (policy_rewards, "C1", "policy")):
        mean = sum(values) / max(len(values), 1)
        hist.axvline(mean, color=color, linestyle="--", linewidth=1.2, label=f"{name} mean {mean:.2f}")
    hist.set_xlabel(f"{result['reward']} reward")
    hist.set_ylabel("samples")
    hist.set_title(
        f"win rate {result['win_rate']:.3f}, KL {result['kl']:.3f}; {len(policy_rewards)} samples a side "
        f"({result.get('num_prompts', '?')} prompts)",
        fontsize=9,
    )
    hist.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize=10)

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


def best_of_n_values(result: dict[str, Any]) -> list[int]:
    """The N of every `best_of_N_win_rate` key of an evaluation, ascending."""
    prefix, suffix = "best_of_", "_win_rate"
    return sorted(
        int(k[len(prefix) : -len(suffix)]) for k in result if k.startswith(prefix) and k.endswith(suffix)
    )


def plot_best_of_n(path: Path, result: dict[str, Any]) -> None:
    """`eval_best_of_n.png`: best-of-N and worst-of-N win rates against the reference as N grows (both sides
    decoded the same way), for an evaluation at two or more N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = best_of_n_values(result)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    for kind, marker in (("best", "o"), ("worst", "v")):
        ax.plot(ns, [result[f"{kind}_of_{n}_win_rate"] for n in ns], marker=marker, label=f"{kind}-of-N")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (samples per pick, both sides)")
    ax.set_ylabel(f"win rate vs reference ({result['reward']})")
    ax.set_title(f"KL {result['kl']:.2f}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
