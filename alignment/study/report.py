"""A study's reports, built from its finished run directories alone (so `--collect` after runs that ran
anywhere gives the same files as a study that ran here):

    study.csv                    one row per finished run: run, arm, seed, grid values, every scalar
                                 eval.json key, wall_time_s
    study.md                     mean ± sd over seeds per arm and grid point, the best per column in bold;
                                 the best win rate each arm reaches within KL budgets
    frontier.png                 gold win rate against KL, one colour per arm: every evaluation of every run
                                 (eval_history.jsonl and the final eval.json, averaged over seeds at each
                                 grid point and step) and the arm's upper envelope
    classifier_vs_generator.png  each run's pairwise-classifier accuracy (base-sample pairs; its own samples)
                                 against its win rate (Tang et al. 2024: offline classifies, online generates)
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from alignment.eval.history import read_history
from alignment.files import write_text_atomic
from alignment.study.runs import is_finished, read_marker, result_of
from alignment.study.spec import PlannedRun, Study

WALL = "wall_time_s"
DEFAULT_COLUMNS = (
    "win_rate",
    "gold_reward",
    "kl",
    "pairwise_accuracy",
    "pairwise_accuracy_policy_samples",
    "best_of_4_win_rate",
    "worst_of_4_win_rate",
    "harmful_rate",
    "length",
    "heldout_accuracy",
    WALL,
)
KL_BUDGETS = (0.5, 1.0, 2.0, 4.0, 8.0)
MATCHED_KL = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def best_direction(key: str) -> str | None:
    """Which way is better for a column: 'max', 'min' or None (KL and length are trade-offs, not scores)."""
    if key == WALL or key.endswith("harmful_rate"):
        return "min"
    if key.endswith(("win_rate", "accuracy", "accuracy_policy_samples")) or key == "gold_reward":
        return "max"
    return None


def number_format(key: str) -> str:
    if key == WALL:
        return "{:.0f}"
    if key.startswith("kl") or key in ("length", "gold_reward"):
        return "{:.2f}"
    return "{:.3f}"


def report_order(study: Study) -> list[PlannedRun]:
    """The runs by arm (as the study lists them), then grid point, then seed: the order of table rows."""
    arms = [a.name for a in study.arms]
    points: dict[str, list[str]] = {}
    for run in study.runs:
        labels = points.setdefault(run.arm.name, [])
        if repr(run.point) not in labels:
            labels.append(repr(run.point))

    def key(run: PlannedRun) -> tuple[int, int, int]:
        seed = -1 if run.seed is None else study.seeds.index(run.seed)
        return arms.index(run.arm.name), points[run.arm.name].index(repr(run.point)), seed

    return sorted(study.runs, key=key)


def finished_runs(study: Study) -> tuple[list[PlannedRun], list[PlannedRun]]:
    """(finished, not finished) runs, in report order."""
    ordered = report_order(study)
    done = [r for r in ordered if is_finished(study, r)]
    return done, [r for r in ordered if r not in done]


def run_row(run: PlannedRun) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run.name, "arm": run.arm.name, "seed": run.seed, **run.point}
    for key, value in result_of(run).items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            continue  # examples, nested tables
        row[f"eval_{key}" if key in row else key] = value  # eval.json's `seed` is the evaluation's
    row[WALL] = read_marker(run)["wall_time_s"]
    return row


def write_csv(study: Study, rows: list[dict[str, Any]]) -> None:
    grid_keys = list(dict.fromkeys(k for arm in study.arms for k in arm.grid))
    head = ["run", "arm", "seed", *grid_keys]
    keys = list(dict.fromkeys(k for row in rows for k in row if k not in head and k != WALL))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*head, *keys, WALL], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text_atomic(study.output_dir / "study.csv", out.getvalue())


def conditions(study: Study, rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, rows over seeds) per arm and grid point, in plan order of the arms."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for arm in study.arms:
        for row in rows:
            if row["arm"] == arm.name:
                point = ", ".join(f"{k.split('.')[-1]} {row[k]}" for k in arm.grid)
                groups.setdefault(f"{arm.name}" + (f" ({point})" if point else ""), []).append(row)
    return list(groups.items())


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample sd (None for one value); a NaN in the values (an undefined metric) gives NaN."""
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summary_table(study: Study, rows: list[dict[str, Any]]) -> str:
    """Mean ± sd over seeds per arm and grid point; the best mean of each scored column in bold."""
    reported = {a.name for a in study.arms if a.report}
    groups = [(label, g) for label, g in conditions(study, rows) if g[0]["arm"] in reported]
    specs = study.columns or [k for k in DEFAULT_COLUMNS if any(k in r for _, g in groups for r in g)]
    columns = [
        (c, best_direction(c)) if isinstance(c, str) else (c["key"], c.get("best", "max")) for c in specs
    ]
    stats = {
        (label, key): mean_sd([r[key] for r in g if isinstance(r.get(key), (int, float))])
        for label, g in groups
        for key, _ in columns
        if any(isinstance(r.get(key), (int, float)) for r in g)
    }
    best = {}
    for key, direction in columns:
        means = [stats[(label, key)][0] for label, _ in groups if (label, key) in stats]
        means = [m for m in means if math.isfinite(m)]
        if direction and len(means) > 1:
            best[key] = max(means) if direction == "max" else min(means)
    titles = ["arm", "runs", *(("wall time (s)" if k == WALL else k) for k, _ in columns)]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for label, g in groups:
        cells = [label, str(len(g))]
        for key, _ in columns:
            if (label, key) not in stats:
                cells.append("—")
                continue
            mean, sd = stats[(label, key)]
            fmt = number_format(key)
            text = fmt.format(mean) + ("" if sd is None else f" ± {fmt.format(sd)}")
            cells.append(f"**{text}**" if key in best and mean == best[key] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def frontier_points(study: Study, runs: list[PlannedRun]) -> dict[str, list[dict[str, Any]]]:
    """arm → points {kl, win_rate, final, label}: each evaluation step of each grid point, averaged over the
    seeds that have it; the final evaluation of a run counts as its last step."""
    by_condition: dict[tuple[str, str], dict[float, list[tuple[float, float]]]] = {}
    finals: dict[tuple[str, str], float] = {}
    for run in runs:
        if not run.arm.report:
            continue
        final = result_of(run)
        if not all(finite(final.get(k)) for k in ("kl", "win_rate")):
            continue
        condition = (run.arm.name, ", ".join(f"{k.split('.')[-1]} {v}" for k, v in run.point.items()))
        steps = by_condition.setdefault(condition, {})
        history = [
            h for h in read_history(run.output_dir) if finite(h.get("kl")) and finite(h.get("win_rate"))
        ]
        for h in history:
            steps.setdefault(h["step"], []).append((h["kl"], h["win_rate"]))
        last = math.inf  # the final evaluation sorts after every step of the history
        steps.setdefault(last, []).append((final["kl"], final["win_rate"]))
        finals[condition] = last
    points: dict[str, list[dict[str, Any]]] = {}
    for (arm, label), steps in by_condition.items():
        for step, pairs in sorted(steps.items()):
            points.setdefault(arm, []).append(
                {
                    "kl": mean_sd([p[0] for p in pairs])[0],
                    "win_rate": mean_sd([p[1] for p in pairs])[0],
                    "final": step == finals[(arm, label)],
                    "label": label,
                }
            )
    return points


def envelope(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The upper-left frontier: points no other point beats with a higher win rate at no more KL."""
    out: list[tuple[float, float]] = []
    for p in sorted(points, key=lambda p: (p["kl"], -p["win_rate"])):
        if not out or p["win_rate"] > out[-1][1]:
            out.append((p["kl"], p["win_rate"]))
    return out


def frontier_at(points: list[dict[str, Any]], kl: float) -> float | None:
    """The arm's frontier line (its envelope, linearly interpolated) at `kl`; None outside its KL range."""
    line = envelope(points)
    for (x0, y0), (x1, y1) in zip(line, line[1:]):
        if x0 <= kl <= x1:
            return y0 + (y1 - y0) * (kl - x0) / (x1 - x0)
    return line[0][1] if len(line) == 1 and line[0][0] == kl else None


def matched_kl_table(points: dict[str, list[dict[str, Any]]]) -> str:
    """Each arm's frontier at the same KL values (Tang et al.: compare at matched KL, not matched steps)."""
    lines = [
        "| arm | " + " | ".join(f"KL = {k:g}" for k in MATCHED_KL) + " |",
        "|---|" + "---|" * len(MATCHED_KL),
    ]
    values = {arm: [frontier_at(ps, k) for k in MATCHED_KL] for arm, ps in points.items()}
    best = [
        max((v[i] for v in values.values() if v[i] is not None), default=None) for i in range(len(MATCHED_KL))
    ]
    for arm, row in values.items():
        cells = [
            "—" if v is None else (f"**{v:.3f}**" if v == best[i] and len(points) > 1 else f"{v:.3f}")
            for i, v in enumerate(row)
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_table(points: dict[str, list[dict[str, Any]]]) -> str:
    """The best seed-averaged win rate each arm reaches at KL ≤ each budget (— where it has no point)."""
    lines = [
        "| arm | " + " | ".join(f"KL ≤ {b:g}" for b in KL_BUDGETS) + " |",
        "|---|" + "---|" * len(KL_BUDGETS),
    ]
    best_at = {
        b: max(
            (max((p["win_rate"] for p in ps if p["kl"] <= b), default=-1) for ps in points.values()),
            default=-1,
        )
        for b in KL_BUDGETS
    }
    for arm, ps in points.items():
        cells = []
        for b in KL_BUDGETS:
            within = [p["win_rate"] for p in ps if p["kl"] <= b]
            text = f"{max(within):.3f}" if within else "—"
            cells.append(f"**{text}**" if within and max(within) == best_at[b] and len(points) > 1 else text)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_frontier(study: Study, points: dict[str, list[dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, (arm, ps) in enumerate(points.items()):
        color = f"C{i % 10}"
        ax.scatter(
            [p["kl"] for p in ps if not p["final"]],
            [p["win_rate"] for p in ps if not p["final"]],
            s=12,
            alpha=0.45,
            color=color,
        )
        ax.scatter(
            [p["kl"] for p in ps if p["final"]],
            [p["win_rate"] for p in ps if p["final"]],
            s=40,
            color=color,
            edgecolor="black",
            linewidth=0.5,
            marker="*" if len(ps) == 1 else "o",
        )
        line = envelope(ps)
        ax.plot([x for x, _ in line], [y for _, y in line], color=color, label=arm, linewidth=1.8)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("KL(π ‖ π_ref), nats per completion")
    ax.set_ylabel("gold win rate against the reference")
    ax.set_title(
        f"{study.path.stem}: win rate vs KL (big marks: final models; small: during training; "
        "lines: each arm's frontier)",
        fontsize=8,
    )
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(study.output_dir / "frontier.png", dpi=110)
    plt.close(fig)


def plot_classifier_vs_generator(study: Study, rows: list[dict[str, Any]]) -> bool:
    """Two panels: pairwise accuracy on base-sample pairs / on the policy's own samples (x) against the gold
    win rate (y), one point per run. False when no run has the keys."""
    panels = [
        ("pairwise_accuracy", "pairs of base-model samples"),
        ("pairwise_accuracy_policy_samples", "pairs of the policy's own samples"),
    ]
    reported = {a.name for a in study.arms if a.report}
    usable = [
        r
        for r in rows
        if r["arm"] in reported and finite(r.get("pairwise_accuracy")) and finite(r.get("win_rate"))
    ]
    if not usable:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    arms = list(dict.fromkeys(r["arm"] for r in usable))
    for ax, (key, title) in zip(axes, panels):
        for i, arm in enumerate(arms):
            mine = [r for r in usable if r["arm"] == arm and finite(r.get(key))]
            ax.scatter(
                [r[key] for r in mine], [r["win_rate"] for r in mine], color=f"C{i % 10}", label=arm, s=22
            )
        ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"pairwise accuracy of β·log π/π_ref, {title}")
        ax.set_title(f"classifier ({title}) vs generator", fontsize=9)
    axes[0].set_ylabel("gold win rate against the reference (generator)")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(study.output_dir / "classifier_vs_generator.png", dpi=110)
    plt.close(fig)
    return True


def write_reports(study: Study) -> tuple[str, list[PlannedRun]]:
    """Every report from the finished runs; returns study.md's text and the runs that have not finished."""
    runs, missing = finished_runs(study)
    rows = [run_row(r) for r in runs]
    study.output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(study, rows)
    text = (
        f"# Study `{study.path}`\n\n{len(runs)} of {len(study.runs)} runs finished; seeds {study.seeds}; "
        "mean ± sd over seeds (bold: the best of a column).\n\n" + summary_table(study, rows)
    )
    if "frontier" in study.plots:
        points = frontier_points(study, runs)
        if points:
            plot_frontier(study, points)
            text += (
                "\nBest win rate reached within a KL budget (seed means, every evaluation; frontier.png):\n\n"
            )
            text += budget_table(points)
            if any(frontier_at(ps, k) is not None for ps in points.values() for k in MATCHED_KL):
                text += "\nEach arm's frontier (the line in frontier.png) at matched KL (— outside the KL it reached):\n\n"
                text += matched_kl_table(points)
    if "classifier_vs_generator" in study.plots:
        plot_classifier_vs_generator(study, rows)
    if missing:
        text += "\nNot finished: " + ", ".join(r.name for r in missing) + "\n"
    write_text_atomic(study.output_dir / "study.md", text)
    return text, missing
