"""Print a markdown table of gold-evaluation results from run directories (their eval.json files).

python scripts/results_table.py runs/dpo runs/ipo runs/kto runs/bco runs/d2o
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alignment.eval.table import markdown_table

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
    rows = []
    for run in args.runs:
        path = run / "eval.json"
        rows.append({"run": run.name, **(json.loads(path.read_text()) if path.exists() else {})})
    print(markdown_table(rows, [("run", "run", "{}"), *COLUMNS]), end="")


if __name__ == "__main__":
    main()
