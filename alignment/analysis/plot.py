"""`shift.png`: where along the completion the aligned model departs from its base.

Left, the unshifted / marginal / shifted fractions at each completion position, stacked to 1 (the paper's
finding: shifted tokens cluster in the first positions). Right, the mean KL(P_base ‖ P_aligned) at each
position, which the paper sees fall as the answer goes on. The title carries the overall fractions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

COLOURS = {"unshifted": "tab:green", "marginal": "tab:orange", "shifted": "tab:red"}


def plot_shift(path: Path, summary: Mapping[str, Any]) -> None:
    """Write the two-panel figure of a shift.json payload to `path` (matplotlib's Agg backend: no display).

    It reads the payload, not a `ShiftResult`, so a saved shift.json can be re-plotted without the models.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profile = summary["positions"]
    positions = [stats["position"] for stats in profile]
    fig, (frac_ax, kl_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    bottom = [0.0] * len(profile)
    for name, colour in COLOURS.items():
        values = [stats[name] for stats in profile]
        frac_ax.bar(positions, values, bottom=bottom, width=1.0, color=colour, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    frac_ax.set_xlabel("completion position t")
    frac_ax.set_ylabel("fraction of completions")
    frac_ax.set_ylim(0, 1)
    frac_ax.set_title("base rank of the aligned token")
    frac_ax.legend(loc="lower right", fontsize="small")

    kl_ax.plot(positions, [stats["kl"] for stats in profile], marker=".")
    kl_ax.set_xlabel("completion position t")
    kl_ax.set_ylabel("mean KL(P_base ‖ P_aligned)")
    kl_ax.set_title(f"KL by position (mean {summary['kl']:.3f})")
    fig.suptitle(
        f"unshifted {summary['unshifted']:.1%} · marginal {summary['marginal']:.1%} · "
        f"shifted {summary['shifted']:.1%}   ({summary['num_tokens']} tokens, {summary['num_prompts']} prompts)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
