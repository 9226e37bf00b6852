"""Print a markdown table of gold-evaluation results from run directories (their eval.json files).

    python scripts/results_table.py runs/dpo runs/ipo runs/kto runs/bco runs/d2o
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = [
    ("win_rate", "win rate vs ref", "{:.3f}"),
    ("gold_reward", "gold reward", "{:.2f}"),
    ("reference_gold_reward", "ref gold reward", "{:.2f}"),
    ("kl", "KL(π‖π_ref)", "{:.3f}"),
    ("harmful_rate", "harmful", "{:.1%}"),
    ("reference_harmful_rate", "ref harmful", "{:.1%}"),
    ("length", "length", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for run in args.runs:
        path = run / "eval.json"
        if not path.exists():
            print(f"| {run.name} | " + " | ".join("—" for _ in COLUMNS) + " |")
            continue
        result = json.loads(path.read_text())
        cells = [fmt.format(result[key]) if key in result else "—" for key, _, fmt in COLUMNS]
        print(f"| {run.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
