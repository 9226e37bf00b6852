"""Selfie on the toy world, every arm of the README table, over seeds: mean ± sd across seeds.

    python scripts/selfie_study.py [--seeds 0 1 2] [--out runs/selfie_study]

Arms (all from recipes/selfie.yaml, judged by gold against the base model):
* seed only — DPO on the ~3 % labelled seed (each Selfie run's iter_0);
* Selfie after iteration 1, 2, 3 (the full method);
* DPO on gold labels for the seed and every pool prompt (`toy-selfie` split `full`), same training settings;
* ablations: no refinement (plain DPO on self-labels), no DND, judge reference = the previous reference.

A run that finished is kept (Selfie resumes stage by stage), so the script can be re-run after a stop.
Prints the table and writes it to OUT/table.md with the raw figures in OUT/study.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = {  # run directory prefix -> (overrides, the arm's name in the table)
    "selfie": ([], "Selfie"),
    "no_refinement": (["method.refinement=false"], "Selfie without refinement (plain DPO on self-labels)"),
    "no_dnd": (["method.dnd=false"], "Selfie without DND"),
    "judge_previous": (["method.judge_reference=previous"], "Selfie, judge reference = previous"),
}


def run(args: list[str]) -> None:
    print("+ alignment " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "alignment", *args], cwd=REPO, check=True)


def seed_overrides(seed: int) -> list[str]:
    return [f"training.seed={seed}", f"sampling.seed={seed}"]


def full_labels_overrides(seed: int, out: Path) -> list[str]:
    """The Selfie recipe's training as one DPO run on gold labels for every prompt Selfie sees."""
    return [
        "method={name: dpo, beta: 0.1}",
        "data.train={name: toy-selfie, split: full}",
        "data.pools=[]",
        *seed_overrides(seed),
        f"output_dir={out}",
    ]


def eval_of(directory: Path) -> dict:
    return json.loads((directory / "eval.json").read_text())


def labels_of(directory: Path) -> dict:
    return json.loads((directory / "self_labels.json").read_text())


def collect(out: Path, seeds: list[int]) -> dict[str, list[dict]]:
    """arm -> one dict of figures per seed."""
    arms: dict[str, list[dict]] = {}

    def add(arm: str, directory: Path, label_accuracy: float | None) -> None:
        e = eval_of(directory)
        row = {k: e[k] for k in ("win_rate", "gold_reward", "kl", "length")}
        row["label_accuracy"] = label_accuracy
        arms.setdefault(arm, []).append(row)

    for seed in seeds:
        full = out / f"selfie-s{seed}"
        add("DPO, seed only (iter_0)", full / "iter_0", 1.0)
        for i in (1, 2, 3):
            add(f"Selfie, iteration {i}", full / f"iter_{i}", labels_of(full / f"iter_{i}")["judge_accuracy"])
        add("DPO, gold labels for seed + pools", out / f"full-labels-s{seed}", 1.0)
        for arm in ("no_refinement", "no_dnd", "judge_previous"):
            d = out / f"{arm}-s{seed}"
            accuracy = statistics.mean(labels_of(d / f"iter_{i}")["judge_accuracy"] for i in (1, 2, 3))
            add(ABLATIONS[arm][1], d / "iter_3", accuracy)
    return arms


def label_diagnostics(out: Path, seeds: list[int]) -> list[dict]:
    """For each (seed, iteration) of the full method: the self-labels' accuracy, how often the chosen sample is
    the longer one, and the accuracy of the 10 % least confident pairs against the rest, where confidence is
    β·[(log π_i(y_w) − log π_i(y_l)) − (log π_{i−1}(y_w) − log π_{i−1}(y_l))] after iteration i's training."""
    import numpy as np
    from datasets import load_from_disk

    from alignment.models import load_causal_lm, load_tokenizer
    from alignment.policy.batching import COMPLETIONS
    from alignment.policy.reference import compute_reference_logps
    from alignment.recipe.load import load_recipe

    def logps(model_dir: Path, examples, pad_token_id: int):
        model = load_causal_lm(str(model_dir))
        return compute_reference_logps(model, examples, pad_token_id=pad_token_id, batch_size=64)

    rows = []
    for seed in seeds:
        root = out / f"selfie-s{seed}"
        beta = load_recipe(root / "recipe.yaml").method.params.beta
        pad = load_tokenizer(str(root / "iter_0")).pad_token_id
        for i in (1, 2, 3):
            pairs = load_from_disk(str(root / f"iter_{i}" / "self_labelled"))
            examples = pairs.map(lambda r: {COMPLETIONS: [r["chosen_input_ids"], r["rejected_input_ids"]]})
            now, before = (
                logps(root / f"iter_{i}", examples, pad),
                logps(root / f"iter_{i - 1}", examples, pad),
            )
            z = beta * ((now[:, 0] - now[:, 1]) - (before[:, 0] - before[:, 1]))
            gold = np.asarray(pairs["chosen_gold"]) - np.asarray(pairs["rejected_gold"])
            correct = (gold > 0) + 0.5 * (gold == 0)
            chosen_len = np.asarray([len(c) for c in pairs["chosen_input_ids"]])
            rejected_len = np.asarray([len(c) for c in pairs["rejected_input_ids"]])
            low = z <= np.quantile(z, 0.1)
            rows.append(
                {
                    "seed": seed,
                    "iteration": i,
                    "pairs": len(pairs),
                    "accuracy": float(correct.mean()),
                    "chosen_is_longer": float(
                        ((chosen_len > rejected_len) + 0.5 * (chosen_len == rejected_len)).mean()
                    ),
                    "accuracy_least_confident_10pct": float(correct[low].mean()),
                    "accuracy_rest": float(correct[~low].mean()),
                }
            )
    return rows


def mean_sd(values: list[float], fmt: str) -> str:
    if len(values) < 2:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def table(arms: dict[str, list[dict]], labels: dict[str, str]) -> str:
    cols = (("win_rate", "{:.3f}"), ("kl", "{:.2f}"), ("label_accuracy", "{:.3f}"), ("length", "{:.1f}"))
    lines = [
        "| arm | labels used | gold win rate | KL | accuracy of the labels trained on | length |",
        "|---|---|---|---|---|---|",
    ]
    for arm, rows in arms.items():
        cells = [mean_sd([r[k] for r in rows], fmt) for k, fmt in cols]
        lines.append(f"| {arm} | {labels[arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/selfie_study")
    args = parser.parse_args()
    out = Path(args.out)
    for seed in args.seeds:
        for arm, (extra, _) in ABLATIONS.items():
            run(["recipes/selfie.yaml", *extra, *seed_overrides(seed), f"output_dir={out}/{arm}-s{seed}"])
        if not (out / f"full-labels-s{seed}" / "eval.json").exists():
            run(["recipes/selfie.yaml", *full_labels_overrides(seed, out / f"full-labels-s{seed}")])
    arms = collect(out, args.seeds)
    seed_pct = "3.1 %"
    labels = {arm: ("100 %" if "gold labels" in arm else seed_pct) for arm in arms}
    text = table(arms, labels)
    diagnostics = label_diagnostics(out, args.seeds)
    text += "\n| seed | iteration | pairs | label accuracy | chosen is longer | accuracy, 10 % least confident | rest |\n"
    text += "|---|---|---|---|---|---|---|\n"
    for d in diagnostics:
        text += (
            f"| {d['seed']} | {d['iteration']} | {d['pairs']} | {d['accuracy']:.3f} | {d['chosen_is_longer']:.3f} "
            f"| {d['accuracy_least_confident_10pct']:.3f} | {d['accuracy_rest']:.3f} |\n"
        )
    (out / "table.md").write_text(text)
    payload = {"seeds": args.seeds, "arms": arms, "label_diagnostics": diagnostics}
    (out / "study.json").write_text(json.dumps(payload, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
