"""Online DPO steps against TRL's `OnlineDPOTrainer`, with the time split per optimizer step.

    OMP_NUM_THREADS=1 python scripts/bench_online.py                 # toy-base: ours (both backends) and TRL
    python scripts/bench_online.py --contenders ours-transformers,trl --steps 20 --batch 32

Contenders, each run in turn on the same model, reward, prompts, batch (`--batch` prompts, 2 samples each),
generation length and sampling temperature, with a frozen copy of the initial policy as the reference:

* ``ours-transformers`` / ``ours-vllm``: `recipes/online_dpo.yaml` through the library's own run (evaluation
  off), sampling with the transformers backend or an in-process vLLM engine that gets the weights pushed
  after every step. The split comes from the trainer's online_stats.json: sample, score, train (forward and
  backward), sync, and the step's whole wall time (`step`; the rest is the optimizer and bookkeeping).
* ``trl``: `trl.experimental.online_dpo.OnlineDPOTrainer` with the same model and the same proxy reward
  model (`toy-rm`, a one-logit classifier: TRL scores it as a reward model), transformers generation. Its
  split is measured by timing its own `_generate` (sample) and `_calculate_rewards_from_functions` (score)
  calls; train is the rest of the step (policy and reference forward, loss, backward, optimizer).

The toy proxy reward model is built first if it is not cached (run once before timing). The first
`--warmup` steps are dropped (first-call costs); the table shows mean seconds per step, prompts/s, and the
ratios of TRL's step time to ours; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

KEYS = ("sample", "score", "train", "sync", "step")
CONTENDERS = ("ours-transformers", "ours-vllm", "trl")


def bench_ours(backend: str, args: argparse.Namespace, workdir: Path) -> dict:
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
    return summarise(f"ours-{backend}", steps, args, wall - sum(s["step"] for s in stats["step_seconds"]))


def bench_trl(args: argparse.Namespace, workdir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from alignment.data.loading import load_dataset_spec
    from alignment.models import build_aliases, load_causal_lm, load_tokenizer, resolve_model_path
    from alignment.recipe.load import load_recipe

    started = time.perf_counter()
    recipe = load_recipe(args.recipe)
    build_aliases([recipe.reward.name_or_path], dry_run=False)
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    rows = (args.steps + args.warmup) * args.batch
    prompts = load_dataset_spec(recipe.data.train, seed=0)["prompt"][:rows]
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(recipe.reward.name_or_path), num_labels=1
    )
    config = OnlineDPOConfig(
        output_dir=str(workdir / "trl"),
        per_device_train_batch_size=args.batch,
        max_steps=args.steps + args.warmup,
        learning_rate=recipe.training["learning_rate"],
        beta=[recipe.method.params.beta],
        max_new_tokens=recipe.sampling.max_new_tokens,
        temperature=recipe.sampling.temperature,
        max_length=recipe.data.max_length,
        seed=0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        bf16=False,  # OnlineDPOConfig defaults to bf16; the library's run trains in the recipe's float32
    )
    trainer = OnlineDPOTrainer(
        model=load_causal_lm(recipe.model.name_or_path),
        ref_model=load_causal_lm(recipe.model.name_or_path),
        reward_funcs=reward_model,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    current: dict[str, float] = {"sample": 0.0, "score": 0.0}
    steps: list[dict[str, float]] = []

    def timed(name: str, method):
        def call(*a, **k):
            t = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                current[name] += time.perf_counter() - t

        return call

    trainer._generate = timed("sample", trainer._generate)
    trainer._calculate_rewards_from_functions = timed("score", trainer._calculate_rewards_from_functions)

    class StepEnd(TrainerCallback):
        last = 0.0

        def on_train_begin(self, *a, **k):
            StepEnd.last = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            wall = now - StepEnd.last
            sample, score = current["sample"], current["score"]
            steps.append(
                {"sample": sample, "score": score, "train": wall - sample - score, "sync": 0.0, "step": wall}
            )
            current.update(sample=0.0, score=0.0)
            StepEnd.last = now

    trainer.add_callback(StepEnd())
    setup = time.perf_counter() - started
    trainer.train()
    return summarise("trl", steps[args.warmup :], args, setup)


def summarise(name: str, steps: list[dict], args: argparse.Namespace, setup: float) -> dict:
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in KEYS}
    return {
        "contender": name,
        "steps": len(steps),
        "prompts_per_step": args.batch,
        **{f"{k}_s": round(v, 4) for k, v in mean.items()},
        "prompts_per_s": round(args.batch / mean["step"], 2),
        **{f"{k}_frac": round(mean[k] / mean["step"], 3) for k in KEYS if k != "step"},
        "setup_s": round(setup, 1),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/online_dpo.yaml")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--batch", type=int, default=16, help="prompts per step (2 samples each)")
    args = parser.parse_args(argv)
    contenders = args.contenders.split(",")
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; valid: {', '.join(CONTENDERS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_online-") as tmp:
        for contender in contenders:
            try:
                if contender == "trl":
                    rows.append(bench_trl(args, Path(tmp)))
                else:
                    rows.append(bench_ours(contender.removeprefix("ours-"), args, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 — report a contender that cannot run, keep the others
                print(f"{contender}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append({"contender": contender, "error": f"{type(exc).__name__}: {exc}"})
    header = (
        f"{'contender':>18} | {'sample':>7} | {'score':>7} | {'train':>7} | {'sync':>7} | {'step s':>7} | "
        f"{'prompts/s':>9} | setup s"
    )
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['contender']:>18} | failed: {r['error']}")
            continue
        cells = " | ".join(f"{r[f'{k}_s']:7.3f}" for k in KEYS)
        print(f"{r['contender']:>18} | {cells} | {r['prompts_per_s']:9.2f} | {r['setup_s']:7.1f}")
    print(
        "(seconds per optimizer step, mean over timed steps; ours' step also holds the optimizer and bookkeeping "
        "beyond the four stages; setup = model/engine load, not in any step)"
    )
    done = {r["contender"]: r for r in rows if "error" not in r}
    ratios = {
        f"{c}_vs_trl": round(done["trl"]["step_s"] / done[c]["step_s"], 3)
        for c in done
        if c != "trl" and "trl" in done
    }
    for key, value in ratios.items():
        print(f"{key}: {value}x (TRL's step time / ours)")
    print(json.dumps({"bench": "online", **ratios, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
