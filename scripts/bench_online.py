"""Online DPO steps against TRL's `OnlineDPOTrainer`, with the time split per optimizer step.

    python scripts/bench_online.py                 # toy-base: ours (both backends) and TRL, 2 interleaved reps
    python scripts/bench_online.py --model 80M --steps 4   # a ~80M-parameter model of the toy architecture
    python scripts/bench_online.py --contenders ours-transformers,trl --steps 20 --batch 32

Contenders, each run in turn on the same model, reward, prompts, batch (`--batch` prompts, 2 samples each),
generation length and sampling temperature, with a frozen copy of the initial policy as the reference:

* ``ours-transformers`` / ``ours-vllm``: `recipes/online_dpo.yaml` through the library's own run (evaluation
  off), sampling with the transformers backend or an in-process vLLM engine that gets the weights pushed
  after every step. The split comes from the trainer's online_stats.json: sample, score, train (forward and
  backward), sync, and the step's whole wall time (`step`; the rest is the optimizer and bookkeeping).
* ``trl``: `trl.experimental.online_dpo.OnlineDPOTrainer` with the same model and the same proxy reward
  model (`toy-rm`, a one-logit classifier: TRL scores it as a reward model), transformers generation, and
  ``gradient_checkpointing=False`` (as ours: activations kept, and generation with a KV cache, which TRL
  turns off under checkpointing). Its split is measured by timing its own `_generate` (sample) and
  `_calculate_rewards_from_functions` (score) calls; train is the rest of the step (policy and reference
  forward, loss, backward, optimizer).
* ``trl-default``: the same with `OnlineDPOConfig`'s default ``gradient_checkpointing=True`` (not run unless
  named: it is the slower of the two).

`--model`: an alias or directory, or a size of `alignment.toy.scaled.SHAPES` (4M, 20M, 80M: the toy
architecture widened, random init, saved to a temporary directory); the reward model stays `toy-rm` (same
tokenizer). Each job runs in a fresh process (`--threads` torch threads); the contenders alternate over
`--reps` repetitions in a rotating order and the table shows, per contender, the median over repetitions of
the mean per-step split. The toy proxy reward model is built first if it is not cached (before timing). The
first `--warmup` steps are dropped (first-call costs). tokens/s counts the tokens generated per step (every
sample's completion, EOS included), the same work for every contender (same prompts, k, max_new_tokens);
the ratios are TRL's step time over ours; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchjobs import answer, run_job

KEYS = ("sample", "score", "train", "sync", "step")
CONTENDERS = ("ours-transformers", "ours-vllm", "trl", "trl-default")
DEFAULT_CONTENDERS = ("ours-transformers", "ours-vllm", "trl")


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
        "training.save_strategy='no'",  # as TRL's here (saving falls outside the timed steps either way)
        f"output_dir={out}",
        f"model.name_or_path={args.model}",
    ]
    if backend == "vllm":
        overrides.append("sampling.vllm.max_model_len=256")
    started = time.perf_counter()
    run_recipe(load_recipe(args.recipe, overrides))
    wall = time.perf_counter() - started
    stats = json.loads((out / "online_stats.json").read_text())
    steps = stats["step_seconds"][args.warmup :]
    return summarise(f"ours-{backend}", steps, args, wall - sum(s["step"] for s in stats["step_seconds"]))


def bench_trl(args: argparse.Namespace, workdir: Path, checkpointing: bool) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    from alignment.data.loading import load_dataset_spec
    from alignment.models import build_aliases, load_causal_lm, load_tokenizer, resolve_model_path
    from alignment.recipe.load import load_recipe

    started = time.perf_counter()
    recipe = load_recipe(args.recipe)
    build_aliases([recipe.reward.name_or_path], dry_run=False)
    tokenizer = load_tokenizer(args.model)
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
        gradient_checkpointing=checkpointing,
    )
    trainer = OnlineDPOTrainer(
        model=load_causal_lm(args.model),
        ref_model=load_causal_lm(args.model),
        reward_funcs=reward_model,
        args=config,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
    )
    current: dict[str, float] = {"sample": 0.0, "score": 0.0, "generated_tokens": 0.0}
    steps: list[dict[str, float]] = []

    def timed(name: str, method):
        def call(*a, **k):
            t = time.perf_counter()
            try:
                return method(*a, **k)
            finally:
                current[name] += time.perf_counter() - t

        return call

    def counted(method):
        def call(*a, **k):
            out = method(*a, **k)  # prompt_ids, prompt_mask, completion_ids, completion_mask, ...
            current["generated_tokens"] += float(out[3].sum())
            return out

        return call

    trainer._generate = timed("sample", counted(trainer._generate))
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
                {"sample": sample, "score": score, "train": wall - sample - score, "sync": 0.0, "step": wall,
                 "generated_tokens": current["generated_tokens"]}
            )  # fmt: skip
            current.update(sample=0.0, score=0.0, generated_tokens=0.0)
            StepEnd.last = now

    trainer.add_callback(StepEnd())
    setup = time.perf_counter() - started
    trainer.train()
    return summarise("trl-default" if checkpointing else "trl", steps[args.warmup :], args, setup)


def summarise(name: str, steps: list[dict], args: argparse.Namespace, setup: float) -> dict:
    mean = {k: sum(s[k] for s in steps) / len(steps) for k in (*KEYS, "generated_tokens")}
    return {
        "contender": name,
        "steps": len(steps),
        "prompts_per_step": args.batch,
        **{f"{k}_s": round(mean[k], 4) for k in KEYS},
        "generated_tokens_per_step": round(mean["generated_tokens"], 1),
        "tokens_per_s": round(mean["generated_tokens"] / mean["step"], 1),
        "prompts_per_s": round(args.batch / mean["step"], 2),
        **{f"{k}_frac": round(mean[k] / mean["step"], 3) for k in KEYS if k != "step"},
        "setup_s": round(setup, 1),
    }


def run_contender(contender: str, args: argparse.Namespace) -> dict:
    """One contender's run in a fresh process (its own engine, allocator and RSS)."""
    command = [__file__, "--job", contender, "--recipe", args.recipe, "--model", args.model,
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
               "--threads", str(args.threads)]  # fmt: skip
    result, error = run_job(command, args.threads, TRL_EXPERIMENTAL_SILENCE="1")
    return result if result is not None else {"contender": contender, "error": error}


def job(contender: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_online-") as tmp:
        if contender.startswith("trl"):
            return bench_trl(args, Path(tmp), checkpointing=contender == "trl-default")
        return bench_ours(contender.removeprefix("ours-"), args, Path(tmp))


def median_row(runs: list[dict]) -> dict:
    """Per key, the median over repetitions (the step split, tokens/s, prompts/s, fractions)."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return runs[0]
    row = {k: v for k, v in done[0].items() if not isinstance(v, (int, float))}
    for key, value in done[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            row[key] = round(statistics.median(r[key] for r in done), 4)
    row["reps"] = len(done)
    return row


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default="recipes/online_dpo.yaml")
    parser.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS))
    parser.add_argument("--model", default="toy-base", help="alias, directory, or a size: 4M, 20M, 80M")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--batch", type=int, default=16, help="prompts per step (2 samples each)")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions of every contender")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        answer(job(args.job, args))
        return 0
    contenders = args.contenders.split(",")
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; valid: {', '.join(CONTENDERS)}")
    from alignment.models import build_aliases
    from alignment.recipe.load import load_recipe
    from alignment.toy.scaled import SHAPES, save_scaled_model

    build_aliases([load_recipe(args.recipe).reward.name_or_path], dry_run=False)  # not inside any timing
    started = time.time()
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory(prefix="bench_online-model-") as tmp:
        size = args.model
        if size in SHAPES:
            from alignment.models import resolve_model_path

            args.model = str(
                save_scaled_model(resolve_model_path("toy-base"), Path(tmp) / size, shape=SHAPES[size])
            )
        for rep in range(args.reps):
            for contender in contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]:
                out = run_contender(contender, args)
                runs[contender].append(out)
                shown = f"{out['step_s']:.3f} s/step" if "error" not in out else f"failed: {out['error']}"
                print(f"  rep {rep} {contender:18s} {shown}", file=sys.stderr, flush=True)
    rows = [median_row(runs[c]) for c in contenders]
    print(f"\nOnline DPO steps on {size}: {args.batch} prompts x 2 samples, {args.steps} timed steps "
          f"(+{args.warmup} warm-up), {args.threads} threads, median of {args.reps} interleaved reps; "
          f"wall {time.time() - started:.0f} s\n")  # fmt: skip
    header = (
        f"{'contender':>18} | {'sample':>7} | {'score':>7} | {'train':>7} | {'sync':>7} | {'step s':>7} | "
        f"{'tokens/s':>8} | {'sync %':>6} | setup s"
    )
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['contender']:>18} | failed: {r['error']}")
            continue
        cells = " | ".join(f"{r[f'{k}_s']:7.3f}" for k in KEYS)
        print(
            f"{r['contender']:>18} | {cells} | {r['tokens_per_s']:8.1f} | {r['sync_frac']:6.1%} | {r['setup_s']:7.1f}"
        )
    print(
        "(seconds per optimizer step, mean over timed steps; ours' step also holds the optimizer and bookkeeping "
        "beyond the four stages; tokens/s: generated tokens per second of whole steps; setup = model/engine "
        "load, not in any step)"
    )
    done = {r["contender"]: r for r in rows if "error" not in r}
    ratios = {
        f"{c}_vs_{peer.replace('-', '_')}": round(done[peer]["step_s"] / done[c]["step_s"], 3)
        for peer in ("trl", "trl-default")
        for c in done
        if c.startswith("ours") and peer in done
    }
    for key, value in ratios.items():
        print(f"{key}: {value}x (the TRL contender's step time / ours)")
    print(json.dumps({"bench": "online", "model": size, **ratios, "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
