"""Evaluation time: a run's evaluation with the transformers backend against vLLM.

Two measurements, each contender in its own fresh process (what a run pays: model loads, the vLLM import
and engine start included; the torch/transformers imports a run already has are not), interleaved over
`--reps` repetitions:

* **recipe** — `alignment recipes/dpo.yaml` end to end on the toy world (training, saving, evaluation)
  with `evaluation.backend` transformers and vllm; the lifecycle's own log line gives the evaluation's
  seconds and its share of the run's wall time. The data, reference log-prob and reference-sample caches are
  filled first by one untimed run per backend, as any run after a user's first finds them.
* **evaluator** — the recipe's evaluation alone (`RecipeEvaluator`: 256 prompts × 2 samples of up to 48
  tokens for the reference and the policy, the exact KL and implicit-reward passes, the gold judge) of the
  toy model and of a ~20M-parameter model of its architecture (random init), split into engine start,
  sampling (both sides), log-prob passes (KL and implicit rewards) and the rest (judging, loads); each job
  with an empty reference-sample cache, so both sides are sampled (a first evaluation).

    python scripts/bench_eval.py [--reps 2] [--models toy,20M] [--threads 2] [--skip-recipe]

Prints a table and, as its last line, one JSON object: seconds per (model, backend), the recipe's
evaluation share per backend, and `faster` per model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchjobs import answer, run_job

BACKENDS = ("transformers", "vllm")
EVAL_LINE = re.compile(r"evaluation finished in ([\d.]+) s, \d+% of the run's ([\d.]+) s")


def worker(model_dir: str, backend: str) -> dict:
    """One evaluation of `model_dir` against itself, as a run's final evaluation does it, timed by phase."""
    import torch

    from alignment.eval import gold, policy, run
    from alignment.models import load_causal_lm, load_tokenizer
    from alignment.recipe.schema import (
        DataConfig,
        DatasetSpec,
        EvaluationConfig,
        MethodConfig,
        ModelConfig,
        Recipe,
    )

    phases = {"engine_start": 0.0, "sampling": 0.0, "logprob_passes": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] += time.perf_counter() - t

        return wrapper

    run.make_policy = timed(
        "engine_start", run.make_policy
    )  # builds the sampler: the vLLM engine starts here
    policy.Policy.generate = timed("sampling", policy.Policy.generate)
    gold.kl_on_samples = timed("logprob_passes", gold.kl_on_samples)
    started = time.perf_counter()
    recipe = Recipe(
        method=MethodConfig(name="dpo"),
        model=ModelConfig(name_or_path=model_dir),
        data=DataConfig(train=DatasetSpec(name="toy-paired")),  # required by the schema; never loaded
        evaluation=EvaluationConfig(backend=backend),
        output_dir=tempfile.mkdtemp(prefix="bench_eval_"),
    )
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir)
    evaluator = run.RecipeEvaluator(recipe, tokenizer, uses_adapter=False)
    with torch.no_grad():
        result = evaluator(model)
    total = time.perf_counter() - started
    return {
        "seconds": total,
        **phases,
        "other": total - sum(phases.values()),
        "win_rate": result["win_rate"],
        "kl": result["kl"],
    }


def run_worker(model_dir: str, backend: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_eval_refcache_") as cache:
        result, error = run_job(
            [__file__, "--worker", model_dir, backend, "--threads", str(threads)],
            threads,
            ALIGNMENT_EVAL_REFERENCE_CACHE=cache,
        )
    if result is None:
        raise SystemExit(f"evaluator job {model_dir} / {backend} failed: {error}")
    return result


def run_recipe(recipe: str, out: str, threads: int, *overrides: str) -> tuple[float, float, float]:
    """(process wall, evaluation seconds, run seconds) of `alignment recipe` in a fresh process; the last two
    from the lifecycle's log line (the run: from its start, after the data loaded, to the evaluation's end)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "alignment", recipe, f"output_dir={out}", *overrides],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"`alignment {recipe} {' '.join(overrides)}` failed ({proc.returncode})")
    match = EVAL_LINE.search(proc.stderr)
    if match is None:
        return wall, float("nan"), float("nan")
    return wall, float(match.group(1)), float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--models", default="toy,20M")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recipe", default="recipes/dpo.yaml")
    parser.add_argument("--skip-recipe", action="store_true", help="only the evaluator measurements")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch
        import transformers  # noqa: F401  (a run has it imported before its evaluation starts)

        torch.set_num_threads(args.threads)
        answer(worker(*args.worker))
        return

    from alignment.models import resolve_model_path
    from alignment.toy.scaled import SHAPES, save_scaled_model

    started = time.time()
    summary: dict = {"bench": "eval", "reps": args.reps, "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        toy = resolve_model_path("toy-base")
        models = {
            name: toy if name == "toy" else str(save_scaled_model(toy, Path(tmp) / name, shape=SHAPES[name]))
            for name in args.models.split(",")
        }
        recipe_runs: dict[str, list[tuple[float, float, float]]] = {b: [] for b in BACKENDS}
        if not args.skip_recipe:
            for backend in BACKENDS:
                run_recipe(
                    args.recipe, f"{tmp}/warm-{backend}", args.threads, f"evaluation.backend={backend}"
                )
            for rep in range(args.reps):
                for backend in BACKENDS if rep % 2 == 0 else BACKENDS[::-1]:
                    wall, spent, whole = run_recipe(
                        args.recipe,
                        f"{tmp}/run-{backend}-{rep}",
                        args.threads,
                        f"evaluation.backend={backend}",
                    )
                    recipe_runs[backend].append((wall, spent, whole))
                    print(f"  recipe rep {rep} {backend:12s} process {wall:6.1f} s, run {whole:6.1f} s, evaluation {spent:6.1f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
        evals: dict[tuple[str, str], list[dict]] = {}
        for rep in range(args.reps):
            for name, model_dir in models.items():
                for backend in BACKENDS if rep % 2 == 0 else BACKENDS[::-1]:
                    out = run_worker(model_dir, backend, args.threads)
                    evals.setdefault((name, backend), []).append(out)
                    print(f"  eval rep {rep} {name:4s} {backend:12s} {out['seconds']:6.1f} s", file=sys.stderr,
                          flush=True)  # fmt: skip

    print(f"\nEvaluation time, {args.threads} threads, median of {args.reps} interleaved reps; wall "
          f"{time.time() - started:.0f} s\n")  # fmt: skip
    if not args.skip_recipe:
        print(f"recipe {args.recipe} end to end (process: with interpreter start and imports; run: the lifecycle's "
              "wall after the data loaded, training + saving + evaluation; share: evaluation / process):")  # fmt: skip
        summary["recipe"] = {}
        for backend in BACKENDS:
            wall, spent, whole = (statistics.median(r[i] for r in recipe_runs[backend]) for i in range(3))
            share = statistics.median(s / w for w, s, _ in recipe_runs[backend])
            print(f"  {backend:12s} process {wall:6.1f} s, run {whole:6.1f} s, evaluation {spent:6.1f} s = "
                  f"{share:.0%} of the process")  # fmt: skip
            summary["recipe"][backend] = {"process_seconds": round(wall, 1), "run_seconds": round(whole, 1),
                                          "evaluation_seconds": round(spent, 1), "evaluation_share": round(share, 3)}  # fmt: skip
    header = f"\n{'model':5s} {'backend':12s} {'total s':>8s} {'engine':>7s} {'sampling':>9s} {'logprobs':>9s} {'other':>6s}  win rate, KL"
    print(header)
    summary["evaluator"] = {}
    for name in models:
        per = {}
        for backend in BACKENDS:
            runs = evals[(name, backend)]
            med = {k: statistics.median(r[k] for r in runs) for k in ("seconds", "engine_start", "sampling",
                                                                       "logprob_passes", "other")}  # fmt: skip
            per[backend] = med["seconds"]
            print(f"{name:5s} {backend:12s} {med['seconds']:8.1f} {med['engine_start']:7.1f} {med['sampling']:9.1f} "
                  f"{med['logprob_passes']:9.1f} {med['other']:6.1f}  {runs[0]['win_rate']:.3f}, {runs[0]['kl']:.3f}")  # fmt: skip
            summary["evaluator"][f"{name}/{backend}"] = {k: round(v, 2) for k, v in med.items()}
        summary["evaluator"][f"{name}/faster"] = min(per, key=per.get)
        summary["evaluator"][f"{name}/vllm_speedup"] = round(per["transformers"] / per["vllm"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
