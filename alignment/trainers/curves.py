"""`training_curves.png`: what a run logged along training, drawn from the files it leaves behind.

Panels, each only when the run logged it: the loss, the reward margin and accuracy of its preference pairs
(TRL's `rewards/margins`, `rewards/accuracies`), the gradient norm, and the gold win rate and KL of the
evaluations during training (`eval_history.jsonl`, `evaluation.every_n_steps`), against the optimizer step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from alignment.eval.history import read_history

CURVES_FILE = "training_curves.png"
#: (log key, panel title), in panel order
LOGGED = (
    ("loss", "training loss"),
    ("rewards/margins", "reward margin (chosen − rejected)"),
    ("rewards/accuracies", "reward accuracy"),
    ("grad_norm", "gradient norm"),
)


def plot_training_curves(output_dir: str | Path, title: str = "") -> Path | None:
    """Write output_dir/training_curves.png from trainer_state.json and eval_history.jsonl; None (and no
    file) when the run logged no step."""
    root = Path(output_dir)
    state_file = root / "trainer_state.json"
    if not state_file.exists():
        return None
    logs = [
        h for h in json.loads(state_file.read_text()).get("log_history", []) if "step" in h and "loss" in h
    ]
    history = read_history(root)
    panels = [(key, name) for key, name in LOGGED if any(_finite(h.get(key)) for h in logs)]
    if history:
        panels += [("win_rate", "gold win rate (evaluations)"), ("kl", "KL(π‖π_ref) (evaluations)")]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, (key, name) in zip(axes.flat, panels):
        source = history if key in ("win_rate", "kl") else logs
        points = [(h["step"], float(h[key])) for h in source if _finite(h.get(key))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = root / CURVES_FILE
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
