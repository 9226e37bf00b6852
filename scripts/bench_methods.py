"""Where the new methods' runs spend their time: Selfie's judging, CTRL's reference rollouts and calibration,
URIAL's long in-context prefix (encoded once per batch, against once per row).

Each job runs one recipe end to end (`alignment RECIPE`, in a fresh process, into a temporary output_dir with
an empty reference/rollout cache) with timers around the run's phases and, inside them, its kinds of work:

* phases — ``experience`` (Selfie: sampling and judging each pool, `make_pairs`; CTRL: the reference
  rollouts, `CalibratedRewardLabeller.prepare`), ``train`` (the optimizer steps; for CTRL with its on-policy
  sampling and labelling inside), ``evaluate``, and ``other`` (data, model loads, saving);
* work, attributed to the phase it ran in — ``sample`` (any sampler's `generate`), ``judge`` (Selfie's
  implicit-reward labeller: two log-prob passes per sample), ``calibrate`` (CTRL's labeller: reward and
  empirical CDF of every sample), ``reward`` (reward scoring outside a labeller), ``logprobs`` (the
  evaluation's KL and implicit-reward passes). Nested work counts once, to the outermost.

URIAL runs twice per repetition, interleaved: as the library runs it (a prefix shared by every row is encoded
once: `alignment.policy.prefix`) and with that turned off (every row re-encodes the prefix), which is the
before/after of the fix, on the same machine in the same minutes.

    python scripts/bench_methods.py [--methods selfie,ctrl,urial] [--reps 2] [--threads 2]

Prints a table per method and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchjobs import answer, run_job

RECIPES = {
    "selfie": "recipes/selfie.yaml",
    "ctrl": "recipes/ctrl_bon.yaml",
    "urial": "recipes/urial.yaml",
    "urial-no-prefix-reuse": "recipes/urial.yaml",
}
PHASES = ("experience", "train", "evaluate")
WORK = ("sample", "judge", "calibrate", "reward", "logprobs")


class Timers:
    """Seconds per (phase, work). A phase entered inside another (CTRL's rollouts, prepared when training starts)
    has its own clock, paused for the outer one; work entered inside other work counts to the outer work."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.since = 0.0  # start of the innermost phase's current stretch
        self.busy = False

    @property
    def phase(self) -> str:
        return self.stack[-1] if self.stack else "other"

    def wrap_phase(self, owner, name: str, phase: str) -> None:
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            now = time.perf_counter()
            if self.stack:
                self.seconds[self.stack[-1]] += now - self.since
            self.stack.append(phase)
            self.since = now
            try:
                return method(*args, **kwargs)
            finally:
                now = time.perf_counter()
                self.seconds[self.stack.pop()] += now - self.since
                self.since = now

        setattr(owner, name, timed)

    def wrap_work(self, owner, name: str, work: str) -> None:
        method = getattr(owner, name)

        def timed(*args, **kwargs):
            if self.busy:
                return method(*args, **kwargs)
            self.busy, started = True, time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[f"{self.phase}/{work}"] += time.perf_counter() - started
                self.busy = False

        setattr(owner, name, timed)


def job(method: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from alignment import lifecycle
    from alignment.eval import gold
    from alignment.experience import labellers
    from alignment.kinds import self_labelled
    from alignment.recipe.load import load_recipe
    from alignment.run import run_recipe
    from alignment.sampling import base, hf, vllm

    timers = Timers()
    timers.wrap_phase(self_labelled.SelfLabelledRun, "make_pairs", "experience")
    timers.wrap_phase(labellers.CalibratedRewardLabeller, "prepare", "experience")
    timers.wrap_phase(lifecycle, "train", "train")
    timers.wrap_phase(lifecycle, "evaluate_timed", "evaluate")
    timers.wrap_work(hf.TransformersSampler, "generate", "sample")
    timers.wrap_work(vllm.VLLMSampler, "generate", "sample")
    timers.wrap_work(labellers.ImplicitRewardLabeller, "__call__", "judge")
    timers.wrap_work(labellers.CalibratedRewardLabeller, "__call__", "calibrate")
    timers.wrap_work(base.Completions, "score", "reward")
    timers.wrap_work(gold, "kl_on_samples", "logprobs")
    if method == "urial-no-prefix-reuse":
        from alignment.policy import prefix

        prefix.MIN_SHARED_PREFIX = 10**9  # the rows' own prefix, re-encoded per row
    with tempfile.TemporaryDirectory(prefix=f"bench_methods_{method}_") as tmp:
        overrides = [f"output_dir={tmp}/run", f"model.reference_cache_dir={tmp}/cache"]
        started = time.perf_counter()
        run_recipe(load_recipe(RECIPES[method], overrides))
        total = time.perf_counter() - started
        evals = sorted(Path(tmp, "run").rglob("eval.json"), key=lambda p: p.stat().st_mtime)
        result = json.loads(evals[-1].read_text()) if evals else {}  # a staged run's: its last stage's
    seconds = dict(timers.seconds)
    seconds["total"] = total
    seconds["other"] = total - sum(seconds.get(p, 0.0) for p in PHASES)
    return {"seconds": seconds, "win_rate": result.get("win_rate"), "kl": result.get("kl")}


def run_method(method: str, threads: int) -> dict:
    result, error = run_job([__file__, "--job", method, "--threads", str(threads)], threads)
    if result is None:
        raise SystemExit(f"{method} failed: {error}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--methods", default="selfie,ctrl,urial")
    parser.add_argument("--reps", type=int, default=1, help="repetitions (URIAL's two variants: at least 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        answer(job(args.job, args.threads))
        return
    jobs = args.methods.split(",")
    if "urial" in jobs:
        jobs.append("urial-no-prefix-reuse")
    unknown = [m for m in jobs if m not in RECIPES]
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: selfie, ctrl, urial")
    started = time.time()
    runs: dict[str, list[dict]] = defaultdict(list)
    for rep in range(args.reps):
        for method in jobs if rep % 2 == 0 else jobs[::-1]:
            out = run_method(method, args.threads)
            runs[method].append(out)
            print(f"  rep {rep} {method:22s} {out['seconds']['total']:7.1f} s", file=sys.stderr, flush=True)
    print(f"\nMethods' hot paths: seconds per run (median of {args.reps}), {args.threads} threads; wall "
          f"{time.time() - started:.0f} s\n")  # fmt: skip
    summary = {}
    for method in jobs:
        keys = sorted({k for r in runs[method] for k in r["seconds"]})
        med = {k: statistics.median(r["seconds"].get(k, 0.0) for r in runs[method]) for k in keys}
        total = med["total"]
        win_rate = runs[method][0]["win_rate"]
        print(f"{method} ({RECIPES[method]}): total {total:.1f} s, final win rate {win_rate}")
        for phase in (*PHASES, "other"):
            if med.get(phase, 0.0) == 0.0:
                continue
            work = ", ".join(
                f"{w} {med[f'{phase}/{w}']:.1f}" for w in WORK if med.get(f"{phase}/{w}", 0.0) > 0
            )
            print(
                f"  {phase:10s} {med[phase]:7.1f} s {med[phase] / total:5.0%}"
                + (f"   ({work})" if work else "")
            )
        summary[method] = {k: round(v, 2) for k, v in med.items()}
    if "urial" in summary and "urial-no-prefix-reuse" in summary:
        before, after = summary["urial-no-prefix-reuse"]["evaluate"], summary["urial"]["evaluate"]
        summary["urial_prefix_reuse_speedup"] = round(before / after, 3)
        print(f"\nURIAL evaluation: {before:.1f} s re-encoding the prefix per row, {after:.1f} s encoding it once "
              f"per batch: {before / after:.2f}x")  # fmt: skip
    print(json.dumps({"bench": "methods", "reps": args.reps, "threads": args.threads, **summary}))


if __name__ == "__main__":
    main()
