"""Online trainer time split per optimizer step (sample / score / train / sync) for both sampling backends.

    OMP_NUM_THREADS=1 python scripts/bench_online.py                 # toy-base, both backends, 8 steps
    python scripts/bench_online.py --backends transformers --steps 20 --batch 32

Runs `recipes/online_dpo.yaml` (the toy model and its proxy reward model `toy-rm`, built first if it is not
cached yet: run once before timing) through the real trainer with evaluation off, reads the per-step split the trainer writes
to online_stats.json, drops the first `--warmup` steps (first-call costs: vLLM's first batch, allocator
warm-up) and prints the mean seconds per step, a table, and a final JSON line. The vLLM backend includes
the weight push after every step (`time/sync`); the transformers backend samples with the live policy and
pushes nothing. vLLM engine start-up is not part of any step and is reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("sample", "score", "train", "sync")


def bench(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
    from alignment.recipe.load import load_recipe
    from alignment.run import run_recipe

    out = workdir / backend
    overrides = [
        f"sampling.backend={backend}",
        f"training.max_steps={args.steps + args.warmup}",
        f"training.per_device_train_batch_size={args.batch}",
        "training.logging_steps=1000",
        "evaluation.enabled=false",
        f"output_dir={out}",
    ]
    if backend == "vllm":
        overrides.append("sampling.vllm.max_model_len=256")
    started = time.perf_counter()
    run_recipe(load_recipe(args.recipe, overrides))
    wall = time.perf_counter() - started
    stats = json.loads((out / "online_stats.json").read_text())
    steps = stats["step_seconds"][args.warmup :]
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in KEYS}
    total = sum(mean.values())
    return {
        "backend": backend,
        "steps": len(steps),
        "prompts_per_step": args.batch,
        **{f"{k}_s": round(v, 4) for k, v in mean.items()},
        "step_s": round(total, 4),
        **{f"{k}_frac": round(v / total, 3) for k, v in mean.items()},
        "run_wall_s": round(wall, 1),
        "setup_s": round(wall - sum(sum(s.values()) for s in stats["step_seconds"]), 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/online_dpo.yaml")
    parser.add_argument(
        "--backends", nargs="+", default=["transformers", "vllm"], choices=["transformers", "vllm"]
    )
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument(
        "--batch", type=int, default=16, help="prompts per step (k = sampling.n samples each)"
    )
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_online-") as tmp:
        for backend in args.backends:
            try:
                rows.append(bench(backend, args, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 — report a backend that cannot run, keep the other
                print(f"{backend}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append({"backend": backend, "error": f"{type(exc).__name__}: {exc}"})
    header = f"{'backend':>12} | {'sample':>7} | {'score':>7} | {'train':>7} | {'sync':>7} | {'step s':>7} | setup s"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:>12} | failed: {r['error']}")
            continue
        cells = " | ".join(f"{r[f'{k}_s']:7.3f}" for k in KEYS)
        print(f"{r['backend']:>12} | {cells} | {r['step_s']:7.3f} | {r['setup_s']:7.1f}")
    print("(seconds per optimizer step, mean over timed steps; setup = model/engine load, not in any step)")
    print(json.dumps({"bench": "online", "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
