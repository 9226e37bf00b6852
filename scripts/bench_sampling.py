"""Best-of-N sampling throughput (generated tokens/s): vLLM vs transformers `generate`, same weights.

Two models: the given checkpoint (default: the toy model) and a ~20M-parameter model of the same
architecture (random weights, same tokenizer, saved to a temporary directory). Each model is measured in
its own subprocess (one in-process vLLM engine per process); inside it the two backends alternate
(vLLM, transformers, vLLM, ...) for --reps repetitions after one warm-up each, and the median is reported.
Prints a table and, last, one JSON line.

    python scripts/bench_sampling.py [--model-dir DIR] [--prompts 64] [--n 8] [--max-new-tokens 48] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignment.models import resolve_model_path
from alignment.toy.corpus import sample_prompts
from alignment.toy.scaled import save_scaled_model

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(resolve_model_path("toy-base"))


class LengthReward:
    def score(self, prompts, completions):
        import torch

        return torch.tensor([float(len(c)) for c in completions])


def worker(model_dir: str, args) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment.sampling import SamplingParams, best_of_n
    from alignment.sampling.hf import TransformersSampler
    from alignment.sampling.vllm import VLLMSampler

    threads = torch.get_num_threads()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    params_count = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    samplers = {"vllm": VLLMSampler(model_dir, max_model_len=256)}
    startup = time.perf_counter() - t0
    samplers["transformers"] = TransformersSampler(
        model, tokenizer, batch_size=args.batch_size, progress=False
    )
    prompts = sample_prompts(args.prompts, seed=0, split="eval")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=0)
    rates: dict[str, list[float]] = {k: [] for k in samplers}
    for rep in range(args.reps + 1):  # rep 0 is warm-up
        for name, sampler in samplers.items():
            torch.set_num_threads(threads)  # the in-process engine may lower it; same budget for both
            start = time.perf_counter()
            result = best_of_n(sampler, LengthReward(), prompts, args.n, params)
            seconds = time.perf_counter() - start
            rate = result.completions.num_tokens / seconds
            print(
                f"PROGRESS {Path(model_dir).name} rep {rep}{' (warm-up)' if not rep else ''} {name}: {rate:,.0f} tok/s",
                flush=True,
            )
            if rep:
                rates[name].append(rate)
    return dict(
        model_dir=model_dir,
        params=params_count,
        vllm_startup_s=round(startup, 1),
        **{f"{k}_tokens_per_s": round(statistics.median(v), 1) for k, v in rates.items()},
        **{f"{k}_all": [round(x, 1) for x in v] for k, v in rates.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", default=str(TOY) if (TOY / "model.safetensors").exists() else None)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64, help="transformers rows per generate() call")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return
    if args.model_dir is None:
        parser.error("no --model-dir given and the toy model (alignment/toy/assets/base) is not built")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model_dir in (("given", Path(args.model_dir)), ("~20M", None)):
            model_dir = model_dir or save_scaled_model(Path(args.model_dir), Path(tmp) / "large")
            cmd = [sys.executable, __file__, "--worker", str(model_dir)] + [
                f"--{k.replace('_', '-')}={getattr(args, k)}"
                for k in ("prompts", "n", "max_new_tokens", "batch_size", "reps")
            ]
            with tempfile.TemporaryFile("w+") as log:  # vLLM's logging goes here, shown on failure
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
                lines = []
                for raw in proc.stdout:
                    lines.append(raw.rstrip())
                    if raw.startswith("PROGRESS "):
                        print(raw.rstrip()[len("PROGRESS ") :], flush=True)
                line = [x for x in lines if x.startswith("RESULT ")]
                if proc.wait() or not line:
                    log.seek(0)
                    sys.exit(f"worker failed for {model_dir}:\n{log.read()[-3000:]}")
            rows.append(dict(model=label, **json.loads(line[-1][len("RESULT ") :])))
    print(
        f"\nbest-of-{args.n}, {args.prompts} prompts, max {args.max_new_tokens} new tokens, median of {args.reps}"
    )
    print(f"{'model':8} {'params':>10} {'vllm tok/s':>11} {'hf tok/s':>9} {'ratio':>6} {'vllm start s':>12}")
    for r in rows:
        ratio = r["vllm_tokens_per_s"] / r["transformers_tokens_per_s"]
        print(
            f"{r['model']:8} {r['params']:>10,} {r['vllm_tokens_per_s']:>11,.0f} {r['transformers_tokens_per_s']:>9,.0f} "
            f"{ratio:>6.2f} {r['vllm_startup_s']:>12}"
        )
    print(
        json.dumps(
            dict(
                config=dict(
                    prompts=args.prompts, n=args.n, max_new_tokens=args.max_new_tokens, reps=args.reps
                ),
                rows=rows,
            )
        )
    )


if __name__ == "__main__":
    main()
