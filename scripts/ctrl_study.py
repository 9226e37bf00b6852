"""InfAlign in miniature: the win-rate-vs-KL frontiers of RLOO (standard RLHF) and CTRL on the toy world.

    python scripts/ctrl_study.py [--seeds 0 1 2] [--jobs 2] [--out runs/ctrl_study]

Arms (recipes/rloo.yaml and recipes/ctrl_*.yaml, the gold reward as the reward, 512 prompts × 4 samples):
RLOO on the raw reward, CTRL-identity (calibrated), CTRL-bon (best-of-4 transform), CTRL-won (worst-of-4),
each at three to five β reaching from where the KL penalty binds to where the recipes' 64 steps do (CTRL's
reward Φ̃(C) ∈ [0, 1] has about 1/8 of the gold reward's spread, so its β values are about 1/8 of RLOO's;
RLOO and CTRL-won move least per step, so they get two more small β to reach further along KL). Every run is evaluated at N = 1, 2, 4, 8 (8 samples per prompt and side, gold judge).

Writes OUT/frontier.png (best-of-4, worst-of-4 and plain win rate against KL, one curve per arm, the mean over
seeds at each β), OUT/table.md and OUT/study.json, and prints the table. A finished run (its eval.json exists)
is kept, so the script can be re-run after a stop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {  # name -> (recipe, overrides, β values)
    "RLOO": ("recipes/rloo.yaml", [], [0.0125, 0.05, 0.2, 0.8, 3.2]),
    "CTRL-identity": ("recipes/ctrl_bon.yaml", ["method.transform=identity"], [0.025, 0.1, 0.4]),
    "CTRL-bon": ("recipes/ctrl_bon.yaml", [], [0.025, 0.1, 0.4]),
    "CTRL-won": ("recipes/ctrl_won.yaml", [], [0.0015625, 0.00625, 0.025, 0.1, 0.4]),
}
EVALUATION = ["evaluation.samples_per_prompt=8", "evaluation.best_of_n=[1,2,4,8]"]
KEYS = (
    "kl",
    "win_rate",
    "best_of_4_win_rate",
    "worst_of_4_win_rate",
    "best_of_8_win_rate",
    "worst_of_8_win_rate",
)


def run_dir(out: Path, arm: str, beta: float, seed: int) -> Path:
    return out / f"{arm}-b{beta:g}-s{seed}"


def launch(recipe: str, overrides: list[str], directory: Path) -> None:
    if (directory / "eval.json").exists():
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = directory.parent / f"{directory.name}.log"
    directory.parent.mkdir(parents=True, exist_ok=True)
    print(f"+ alignment {recipe} {' '.join(overrides)} output_dir={directory}", flush=True)
    with log.open("w") as f:
        subprocess.run(
            [sys.executable, "-m", "alignment", recipe, *overrides, f"output_dir={directory}"],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            check=True,
        )


def collect(out: Path, seeds: list[int]) -> dict[str, list[dict]]:
    """arm -> one row per β: the mean and sd over seeds of every key."""
    table: dict[str, list[dict]] = {}
    for arm, (_, _, betas) in ARMS.items():
        for beta in betas:
            runs = [json.loads((run_dir(out, arm, beta, s) / "eval.json").read_text()) for s in seeds]
            row = {"beta": beta, "seeds": len(runs)}
            for key in KEYS:
                values = [r[key] for r in runs]
                row[key] = statistics.mean(values)
                row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            table.setdefault(arm, []).append(row)
    return table


def interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear y at x along points sorted by x; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return None


def matched_kl_gaps(table: dict[str, list[dict]], key: str) -> dict[str, list[float | None]]:
    """For each CTRL point: its `key` minus RLOO's at the same KL (RLOO's β points, linearly interpolated)."""
    rloo = [(row["kl"], row[key]) for row in table["RLOO"]]
    gaps = {}
    for arm, rows in table.items():
        if arm != "RLOO":
            gaps[arm] = [
                None if (base := interpolate(rloo, row["kl"])) is None else row[key] - base for row in rows
            ]
    return gaps


def markdown(table: dict[str, list[dict]]) -> str:
    def cell(row: dict, key: str, fmt: str) -> str:
        return f"{fmt.format(row[key])} ± {fmt.format(row[key + '_sd'])}"

    lines = [
        "| arm | β | KL | win rate (N = 1) | best-of-4 | worst-of-4 | best-of-8 | worst-of-8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, rows in table.items():
        for row in rows:
            cells = [cell(row, "kl", "{:.2f}")] + [cell(row, k, "{:.3f}") for k in KEYS[1:]]
            lines.append(f"| {arm} | {row['beta']:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Difference to RLOO at the same KL (RLOO's points interpolated; — outside its KL range):",
        "",
    ]
    lines += ["| arm | β | KL | Δ win rate | Δ best-of-4 | Δ worst-of-4 |", "|---|---|---|---|---|---|"]
    gaps = {k: matched_kl_gaps(table, k) for k in ("win_rate", "best_of_4_win_rate", "worst_of_4_win_rate")}
    for arm, rows in table.items():
        if arm == "RLOO":
            continue
        for i, row in enumerate(rows):
            deltas = ["—" if gaps[k][arm][i] is None else f"{gaps[k][arm][i]:+.3f}" for k in gaps]
            lines.append(f"| {arm} | {row['beta']:g} | {row['kl']:.2f} | " + " | ".join(deltas) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("best_of_4_win_rate", "best-of-4"),
        ("worst_of_4_win_rate", "worst-of-4"),
        ("win_rate", "N = 1"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, title) in zip(axes, panels):
        for arm, rows in table.items():
            rows = sorted(rows, key=lambda r: r["kl"])
            ax.errorbar(
                [r["kl"] for r in rows],
                [r[key] for r in rows],
                xerr=[r["kl_sd"] for r in rows],
                yerr=[r[key + "_sd"] for r in rows],
                marker="o",
                capsize=3,
                label=arm,
            )
        ax.set_xlabel("KL(π‖π_ref)")
        ax.set_ylabel(f"{title} win rate vs base (gold)")
        ax.set_title(title)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each with OMP_NUM_THREADS=1)")
    parser.add_argument("--out", default="runs/ctrl_study")
    args = parser.parse_args()
    out = Path(args.out)
    # seed by seed, CTRL-identity first: the other CTRL arms of that seed then find its reference rollouts cached
    jobs = [
        (
            recipe,
            [*extra, f"method.beta={beta}", f"training.seed={s}", f"sampling.seed={s}", *EVALUATION],
            run_dir(out, arm, beta, s),
        )
        for s in args.seeds
        for arm, (recipe, extra, betas) in sorted(ARMS.items(), key=lambda a: a[0] != "CTRL-identity")
        for beta in betas
    ]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda job: launch(*job), jobs))
    table = collect(out, args.seeds)
    text = markdown(table)
    (out / "table.md").write_text(text)
    (out / "study.json").write_text(json.dumps({"seeds": args.seeds, "arms": table}, indent=1))
    plot(table, out / "frontier.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
