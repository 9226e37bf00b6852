"""DPO training throughput: this library's PreferenceTrainer against TRL's DPOTrainer, same everything.

Two models: the toy model (`alignment/toy/assets/base`, ~1M parameters, Llama) and a ~20M-parameter model of
the same architecture (hidden 512, 6 layers, 8 heads of 64, MLP 1376; random init, same tokenizer; saved to a
temporary directory). Data: the first rows of the toy paired dataset (`toy-paired`, n=512) that state a
preference, written to one JSON Lines file that every contender reads; training runs exactly `--steps`
optimizer steps of `--batch-size` pairs (gradient accumulation 1, fp32, the same learning rate, optimizer, schedule and seed; no evaluation, no
checkpoints, logging off).

Contenders run in one long-lived subprocess each (imports paid once; the driver alternates jobs between
them so repetitions interleave, in a rotating order, for `--reps` repetitions):

* ``ours``        the library's own path (`alignment.kinds.static.build_trainer`: PreferenceTrainer +
                  CompletionCollator, packed), reference log-probs precomputed *and already cached on disk*
                  (a sweep's later runs): steady-state training throughput.
* ``ours-varlen`` ``ours`` with ``model.attn_implementation: varlen_sdpa``: each batch packed into one row,
                  attention within each sequence only, the vocabulary projection on completion positions
                  only (its own reference cache, filled the same way).
* ``limit``       the ceiling for any DPO with cached reference log-probs: forward and backward of the policy
                  alone on ``ours-varlen``'s packed tokens (per-sequence attention, completion positions
                  projected), with a trivial loss (the mean of those logits), in the same Trainer loop.
* ``trl``         `trl.DPOTrainer` with `DPOConfig` defaults (live reference model, padded batches) except
                  ``gradient_checkpointing=False``: its default recomputes activations in the backward, slower,
                  and ours keeps them (neither side saves checkpoints).
* ``trl-precomp`` the same with ``precompute_ref_log_probs=True`` (precomputed in the trainer's __init__).

Cold (``--cold-steps``, default 100: a realistic first run): ``ours-cold``, ``ours-varlen-cold`` and
``trl-precomp-cold`` train that many steps on as many fresh rows with an empty reference cache, so the
reference pass over every row is part of the run; cold tokens/s = all tokens / (reference pass + training).

Tokens are counted identically for everyone: non-padding prompt+completion tokens of each sequence (two per
pair), taken from the features handed to the collator. Steady-state tokens/s = tokens of the steps after
`--warmup` / their wall time, where a step's time is the interval between consecutive `on_step_end`
callbacks (data loading, collation, forward, backward, optimizer all included). The cold figure is all
tokens / (reference precomputation + the whole `trainer.train()`) wall time. Peak memory is the RSS
high-water mark, `resource.getrusage(RUSAGE_SELF).ru_maxrss` read at the end of each job, after the mark was
reset to the current RSS at the job's start (`/proc/self/clear_refs` = 5, so each job is measured alone
although the process is reused); it includes the Python/torch/transformers/trl imports, and `+run`
subtracts the RSS at the job's start (the imports, plus any allocator cache left by earlier jobs).

Sanity: the first-step loss of every contender is printed (the policy is its own reference at step 0, so
it is log 2), together with the losses of steps 2-3 (after identical optimizer updates on identical batches
they must agree across contenders) and the step-0 policy log-probs of the first batch.

    python scripts/bench_dpo.py [--steps 30] [--warmup 10] [--reps 3] [--batch-size 4] [--threads 1]
    python scripts/bench_dpo.py --scaling [--sizes 1M,4M,20M,80M] [--seq-lens 128,512]   # + the plot

``--scaling`` runs the steady contenders (ours, ours-varlen, limit, trl-precomp) on models of ~1M-80M
parameters (`alignment.toy.scaled.SHAPES`) and synthetic pairs whose sequences are about 128 or 512 tokens,
prints tokens/s and peak memory per cell, and draws docs/bench_dpo_scaling.png.

Prints a table and, as its last line, one JSON object for the larger model: ``tokens_per_s``,
``trl_tokens_per_s``, ``ratio`` (ours / TRL default), ``ratio_vs_trl_precompute``, ``fraction_of_limit``,
``cold_ratio_vs_trl_precompute``, and the same for ``varlen_*``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignment.models import resolve_model_path
from alignment.toy.scaled import save_scaled_model

TOY = Path(resolve_model_path("toy-base"))
STEADY = ("ours", "ours-varlen", "limit", "trl", "trl-precomp")
COLD = ("ours-cold", "ours-varlen-cold", "trl-precomp-cold")
CONTENDERS = STEADY + COLD
MAX_LENGTH = 256
MAX_PROMPT_LENGTH = 128
LEARNING_RATE = 1.0e-5
DATASET_N = 512


# ------------------------------------------------------------------------------------------------- helpers
def current_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_pairs(rows: int, folder: str) -> str:
    """The first `rows` toy-paired rows that state a preference (chosen != rejected: the library drops the
    others, TRL would train on them), as JSON Lines: every contender reads exactly these rows."""
    from alignment.data.loading import load_dataset_spec
    from alignment.recipe.schema import DatasetSpec

    path = Path(folder) / f"pairs-{rows}.jsonl"
    if not path.exists():
        raw = load_dataset_spec(DatasetSpec(name="toy-paired", args={"n": DATASET_N}), seed=0)
        kept = [
            r for r in raw.select_columns(["prompt", "chosen", "rejected"]) if r["chosen"] != r["rejected"]
        ]
        if len(kept) < rows:
            raise SystemExit(f"toy-paired n={DATASET_N} has {len(kept)} usable rows, fewer than {rows}")
        path.write_text("".join(json.dumps(r) + "\n" for r in kept[:rows]))
    return str(path)


def dataset_spec(opts: dict):
    from alignment.recipe.schema import DatasetSpec

    return DatasetSpec(name=opts["data"])


class StepTimer:
    """TrainerCallback: wall time between consecutive on_step_end calls (first: from on_train_begin)."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                timer.last = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                now = time.perf_counter()
                timer.times.append(now - timer.last)
                timer.last = now

        self.times: list[float] = []
        self.last = 0.0
        self.callback = _Callback()


class CountingCollator:
    """Wraps a collator; records non-padding prompt+completion tokens of every batch it builds, in order."""

    def __init__(self, inner, count):
        self.inner = inner
        self.count = count
        self.tokens: list[int] = []

    def __call__(self, features):
        self.tokens.append(sum(self.count(f) for f in features))
        return self.inner(features)


def record_losses(trainer, store: list[float], first: int = 3) -> None:
    original = trainer.compute_loss

    def compute_loss(*args, **kwargs):
        out = original(*args, **kwargs)
        if len(store) < first and trainer.model.training:
            store.append(float((out[0] if isinstance(out, tuple) else out).detach()))
        return out

    trainer.compute_loss = compute_loss


# -------------------------------------------------------------------------------------------------- worker
def build_ours(opts, cache_dir: str, output_dir: str, attn: str | None = None):
    """The library's path, as `alignment.kinds.static.StaticRun` takes it (precomputed reference, packed batches)."""
    from alignment.data.examples import load_examples
    from alignment.kinds.static import build_context, build_trainer
    from alignment.methods.dpo import DPOParams
    from alignment.models import load_tokenizer
    from alignment.policy.batching import COMPLETIONS
    from alignment.policy.build import build_policy
    from alignment.policy.reference import add_reference_logps
    from alignment.recipe.schema import (
        TRAINING_DEFAULTS,
        DataConfig,
        EvaluationConfig,
        MethodConfig,
        ModelConfig,
        Recipe,
        method_spec,
        reference_mode,
    )

    training = dict(TRAINING_DEFAULTS)
    training.update(
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=opts["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=opts["steps"],
        logging_strategy="no",
        save_strategy="no",  # the library saves a checkpoint every tenth of a run by default; TRL here never
        disable_tqdm=True,
    )
    recipe = Recipe(
        method=MethodConfig(name="dpo", params=DPOParams(beta=0.1)),
        model=ModelConfig(
            name_or_path=opts["model"], reference_cache_dir=cache_dir, attn_implementation=attn
        ),
        data=DataConfig(
            train=dataset_spec(opts),
            max_length=opts.get("max_length", MAX_LENGTH),
            max_prompt_length=opts.get("max_prompt_length", MAX_PROMPT_LENGTH),
        ),
        training=training,
        evaluation=EvaluationConfig(enabled=False),
        output_dir=output_dir,
    )
    spec = method_spec("dpo")
    tokenizer = load_tokenizer(opts["model"])
    train, _, report = load_examples(recipe, tokenizer, spec.formats)
    model = build_policy(recipe)
    objective = spec.objective(recipe.method.params)
    train = objective.build_examples(train, build_context(recipe, model, tokenizer))
    mode = reference_mode(recipe)
    assert mode == "precomputed", mode
    started = time.perf_counter()
    train = add_reference_logps(train, model, pad_token_id=tokenizer.pad_token_id, cache_dir=cache_dir)
    ref_seconds = time.perf_counter() - started
    trainer = build_trainer(recipe, model, tokenizer, objective, mode, None, train, None)
    trainer.data_collator = CountingCollator(
        trainer.data_collator, lambda f: sum(len(f["prompt_input_ids"]) + len(c) for c in f[COMPLETIONS])
    )
    return trainer, ref_seconds, report.summary()


def build_trl(opts, output_dir: str, precompute: bool):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignment.data.loading import load_dataset_spec
    from alignment.models import load_causal_lm, load_tokenizer

    raw = load_dataset_spec(dataset_spec(opts), seed=0)
    # In memory: TRL's precompute cache then lives in a per-process temp dir, so every run precomputes anew.
    raw = Dataset.from_list(raw.select_columns(["prompt", "chosen", "rejected"]).to_list())
    tokenizer = load_tokenizer(opts["model"])
    model = load_causal_lm(opts["model"], dtype="float32")
    config = DPOConfig(
        output_dir=output_dir,
        beta=0.1,
        bf16=False,
        learning_rate=LEARNING_RATE,
        per_device_train_batch_size=opts["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=opts["steps"],
        max_length=opts.get("max_length", MAX_LENGTH),
        precompute_ref_log_probs=precompute,
        # DPOConfig turns gradient checkpointing on by default (memory for speed); ours keeps activations
        gradient_checkpointing=False,
        # what our TRAINING_DEFAULTS set, so optimizer, schedule and seed are identical
        optim="adamw_torch",
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=0,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    started = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=raw, processing_class=tokenizer)
    init_seconds = time.perf_counter() - started
    trainer.data_collator = CountingCollator(
        trainer.data_collator,
        lambda f: 2 * len(f["prompt_ids"]) + len(f["chosen_ids"]) + len(f["rejected_ids"]),
    )
    return trainer, init_seconds


def trivial_loss(trainer):
    """`limit`'s loss: the mean of the policy's logits at the completion positions (the same forward and
    backward a DPO step needs, nothing of the loss or the reference)."""
    from alignment.policy.logps import completion_logits

    def compute_loss(model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = completion_logits(model, inputs["sequences"]).float().mean()
        return (loss, {}) if return_outputs else loss

    return compute_loss


def first_batch_logps(trainer, contender: str) -> list[float]:
    """Policy log-probs (chosen, rejected) of the first 2 rows of the train set, before any step."""
    import torch

    from alignment.policy.logps import sequence_logps

    rows = [trainer.train_dataset[i] for i in range(2)]
    collator = trainer.data_collator.inner
    with torch.no_grad():
        if contender.startswith(("ours", "limit")):
            batch = collator(rows)["sequences"]
            return sequence_logps(trainer.model, batch).flatten().tolist()
        batch = collator(rows)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        out = trainer.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
            fused_lm_head=True,
        )
        chosen, rejected = out.log_probs.sum(1).chunk(2)
        return torch.stack([chosen, rejected], 1).flatten().tolist()


BASELINE_RSS_MIB = float("nan")


def import_everything() -> None:
    """What either side imports, so both start from the same RSS baseline."""
    global BASELINE_RSS_MIB
    import transformers
    import trl.trainer.dpo_trainer  # noqa: F401

    import alignment.kinds.static  # noqa: F401
    import alignment.methods.dpo  # noqa: F401
    import alignment.policy.reference  # noqa: F401
    import alignment.trainers.base  # noqa: F401

    transformers.logging.set_verbosity_error()
    BASELINE_RSS_MIB = current_rss_mib()


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark to its current RSS (Linux >= 4.0), so ru_maxrss is per job."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker(opts: dict) -> dict:
    import gc

    job_started = time.perf_counter()
    gc.collect()
    per_job = reset_peak_rss()
    baseline = current_rss_mib() if per_job else BASELINE_RSS_MIB
    contender = opts["contender"]
    with tempfile.TemporaryDirectory() as tmp:
        ref_seconds = 0.0
        truncation = ""
        if contender.startswith(("ours", "limit")):
            attn = "varlen_sdpa" if contender.startswith(("ours-varlen", "limit")) else None
            cold = contender.endswith("-cold") and not opts.get("prep")
            cache = str(Path(tmp) / "refcache") if cold else opts["cache_dir"] + ("-varlen" if attn else "")
            trainer, ref_seconds, truncation = build_ours(opts, cache, str(Path(tmp) / "out"), attn)
            if contender == "limit":
                trainer.compute_loss = trivial_loss(trainer)
        else:
            trainer, ref_seconds = build_trl(
                opts, str(Path(tmp) / "out"), contender.startswith("trl-precomp")
            )
        logps = first_batch_logps(trainer, contender) if opts.get("sanity") else []
        timer = StepTimer()
        trainer.add_callback(timer.callback)
        losses: list[float] = []
        record_losses(trainer, losses)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
    tokens = trainer.data_collator.tokens[: len(timer.times)]
    assert len(tokens) == len(timer.times) == opts["steps"], (len(tokens), len(timer.times))
    w = opts["warmup"]
    return {
        "contender": contender,
        "steady_tokens_per_s": sum(tokens[w:]) / sum(timer.times[w:]),
        "step_times": timer.times,
        "step_tokens": tokens,
        "train_seconds": train_seconds,
        "ref_seconds": ref_seconds,
        "cold_tokens_per_s": sum(tokens) / (train_seconds + ref_seconds),
        "losses": losses,
        "first_logps": logps,
        "peak_rss_mib": peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "peak_is_per_job": per_job,
        "truncation": truncation,
        "job_seconds": time.perf_counter() - job_started,
    }


# -------------------------------------------------------------------------------------------------- driver
def serve(threads: int) -> None:
    """A contender's process: imports once, then runs one job per stdin line (JSON opts), answers JSON lines.

    One process per (config, contender), so its RSS high-water mark belongs to that contender alone; the
    driver alternates jobs between processes, so repetitions of different contenders interleave in time.
    """
    import gc

    import torch

    answer, sys.stdout = sys.stdout, sys.stderr  # the Trainer prints its summary dict to stdout
    torch.set_num_threads(threads)
    import_everything()
    print(json.dumps({"ready": True}), file=answer, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        out = worker(json.loads(line))
        gc.collect()
        print(json.dumps(out), file=answer, flush=True)


class Contender:
    def __init__(self, name: str, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TQDM_DISABLE="1")
        env["TOKENIZERS_PARALLELISM"] = "false"
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(threads)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.log.seek(0)
                sys.stderr.write(self.log.read()[-6000:])
                raise SystemExit(f"worker {self.name} died ({self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def wait_ready(self) -> None:
        self._read()

    def run(self, opts: dict) -> dict:
        self.proc.stdin.write(json.dumps(opts) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.log.close()


def progress(rep: int, config: str, contender: str, out: dict) -> None:
    print(
        f"  rep {rep} {config:5s} {contender:11s} {out['steady_tokens_per_s']:9.0f} tok/s "
        f"(cold {out['cold_tokens_per_s']:7.0f}), peak {out['peak_rss_mib']:.0f} MiB, job {out['job_seconds']:.0f} s",
        file=sys.stderr,
        flush=True,
    )


def fmt_range(values: list[float]) -> tuple[str, str, str]:
    return f"{statistics.median(values):9.0f}", f"{min(values):9.0f}", f"{max(values):9.0f}"


def fill_reference_caches(procs: dict, contenders: list[str], common: dict) -> None:
    """Fill the reference caches the steady contenders read (ours: sdpa; ours-varlen and limit: varlen), as a
    sweep's first run would; not timed."""
    for name, fill in (("ours", "ours-cold"), ("ours-varlen", "ours-varlen-cold")):
        users = [k for k in contenders if k == name or (name == "ours-varlen" and k == "limit")]
        if users:
            procs[users[0]].run(dict(common, contender=fill, prep=True))


def run_configs(args, contenders: list[str], tmp: str) -> tuple[list[str], dict, dict]:
    """Every job of every config, interleaved; returns (configs, results by (config, contender), sanity)."""
    steady = [k for k in contenders if k in STEADY]
    cold = [k for k in contenders if k in COLD]
    models = {"toy": str(TOY)}
    if "large" in args.configs:
        models["large"] = str(save_scaled_model(TOY, Path(tmp) / "large"))
    configs = [c for c in args.configs.split(",") if c in models]
    results: dict[tuple[str, str], list[dict]] = {(c, k): [] for c in configs for k in contenders}
    sanity: dict[tuple[str, str], dict] = {}
    # One process per contender, all started (and their imports done) before anything is timed.
    started = time.time()
    procs = {k: Contender(k, args.threads) for k in contenders}
    for w in procs.values():
        w.wait_ready()
    print(f"  {len(procs)} worker processes ready after {time.time() - started:.0f} s", file=sys.stderr)
    for config in configs:
        common = dict(
            steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, threads=args.threads,
            rows=args.steps * args.batch_size, data=write_pairs(args.steps * args.batch_size, tmp),
            config=config, model=models[config],
            cache_dir=str(Path(tmp) / f"refcache-{config}"),
        )  # fmt: skip
        fill_reference_caches(procs, steady, common)
        for rep in range(args.reps):
            order = steady[rep % len(steady) :] + steady[: rep % len(steady)] if steady else []
            for contender in order:
                out = procs[contender].run(dict(common, contender=contender, sanity=rep == 0))
                results[(config, contender)].append(out)
                sanity.setdefault((config, contender), out)
                progress(rep, config, contender, out)
        cold_rows = args.cold_steps * args.batch_size
        cold_job = dict(common, steps=args.cold_steps, rows=cold_rows, data=write_pairs(cold_rows, tmp),
                        warmup=min(args.warmup, args.cold_steps - 1))  # fmt: skip
        for rep in range(args.cold_reps if cold else 0):
            for contender in cold[rep % len(cold) :] + cold[: rep % len(cold)]:
                out = procs[contender].run(dict(cold_job, contender=contender, sanity=rep == 0))
                results[(config, contender)].append(out)
                sanity.setdefault((config, contender), out)
                progress(rep, config, contender, out)
    for w in procs.values():
        w.close()
    return configs, results, sanity


SCALING_CONTENDERS = ("ours", "ours-varlen", "limit", "trl-precomp")


def write_synthetic_pairs(seq_len: int, rows: int, folder: str, model_dir: str, seed: int = 0) -> str:
    """Pairs of toy text cut to length: a prompt of a quarter of `seq_len` tokens and two different completions
    of three quarters each, so every sequence is about `seq_len` tokens (re-tokenising the cut text moves
    that by a token or two)."""
    import random

    from transformers import AutoTokenizer

    from alignment.toy.corpus import sample_completion, sample_prompts

    path = Path(folder) / f"synthetic-{seq_len}-{rows}.jsonl"
    if path.exists():
        return str(path)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    stream: list[int] = []
    for prompt in sample_prompts(4000, seed=seed):
        stream += tokenizer(prompt + " " + sample_completion(prompt, rng=rng), add_special_tokens=False)[
            "input_ids"
        ]
    prompt_len, completion_len = seq_len // 4, seq_len - seq_len // 4
    records = []
    for _ in range(rows):

        def cut(n: int) -> str:
            start = rng.randrange(len(stream) - n)
            return tokenizer.decode(stream[start : start + n])

        records.append(
            {
                "prompt": cut(prompt_len),
                "chosen": " " + cut(completion_len),
                "rejected": " " + cut(completion_len),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def run_scaling(args, tmp: str) -> list[dict]:
    """Steady tokens/s and peak memory of each contender for every (model size, sequence length)."""
    from alignment.toy.scaled import SHAPES

    contenders = args.contenders.split(",")
    seq_lens = [int(x) for x in args.seq_lens.split(",")]
    procs = {k: Contender(k, args.threads) for k in contenders}
    for w in procs.values():
        w.wait_ready()
    rows = []
    for size in args.sizes.split(","):
        model = (
            str(TOY)
            if size == "1M"
            else str(
                save_scaled_model(TOY, Path(tmp) / size, shape=SHAPES[size], max_positions=max(seq_lens) + 64)
            )
        )
        params = (Path(model) / "model.safetensors").stat().st_size / 4  # float32 weights
        for seq_len in seq_lens:
            config = f"{size}@{seq_len}"
            n = args.steps * args.batch_size
            common = dict(
                steps=args.steps, warmup=args.warmup, batch_size=args.batch_size, threads=args.threads, rows=n,
                data=write_synthetic_pairs(seq_len, n, tmp, model), config=config, model=model,
                cache_dir=str(Path(tmp) / f"refcache-{config}"), max_length=seq_len + 32,
                max_prompt_length=seq_len // 4 + 16,
            )  # fmt: skip
            fill_reference_caches(procs, contenders, common)
            for rep in range(args.reps):
                for contender in contenders[rep % len(contenders) :] + contenders[: rep % len(contenders)]:
                    out = procs[contender].run(dict(common, contender=contender))
                    progress(rep, config, contender, out)
                    rows.append({"size": size, "params": params, "seq_len": seq_len, **out})
    for w in procs.values():
        w.close()
    return rows


def scaling_main(args) -> None:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_dpo_scaling_") as tmp:
        rows = run_scaling(args, tmp)
    cells: dict[tuple[str, int], dict[str, dict]] = {}
    for r in rows:
        cell = cells.setdefault((r["size"], r["seq_len"]), {})
        best = cell.setdefault(r["contender"], {"tok": [], "peak": 0.0, "params": r["params"]})
        best["tok"].append(r["steady_tokens_per_s"])
        best["peak"] = max(best["peak"], r["peak_rss_mib"])
    contenders = args.contenders.split(",")
    print(
        f"\nDPO scaling: {args.steps} steps x {args.batch_size} pairs (warm-up {args.warmup} excluded), synthetic "
        f"pairs of about seq_len tokens per sequence, fp32, {args.threads} threads, median of {args.reps}; "
        f"wall {time.time() - started:.0f} s\n"
    )
    header = (
        f"{'size':>5} {'seq':>4} "
        + " ".join(f"{c + ' tok/s':>18}" for c in contenders)
        + "  peak MiB (same order)"
    )
    print(header)
    summary = []
    for (size, seq_len), cell in cells.items():
        med = {c: statistics.median(cell[c]["tok"]) for c in contenders if c in cell}
        peaks = {c: cell[c]["peak"] for c in contenders if c in cell}
        print(f"{size:>5} {seq_len:4d} " + " ".join(f"{med.get(c, float('nan')):18.0f}" for c in contenders)
              + "  " + " / ".join(f"{peaks[c]:.0f}" for c in peaks))  # fmt: skip
        entry = {"size": size, "params": next(iter(cell.values()))["params"], "seq_len": seq_len,
                 "tokens_per_s": {c: round(v, 1) for c, v in med.items()},
                 "peak_rss_mib": {c: round(v) for c, v in peaks.items()}}  # fmt: skip
        if "trl-precomp" in med:
            entry["ratio_vs_trl_precompute"] = {c: round(med[c] / med["trl-precomp"], 3) for c in med}
        if "limit" in med:
            entry["fraction_of_limit"] = {c: round(med[c] / med["limit"], 3) for c in med if c != "limit"}
        summary.append(entry)
    if args.plot:
        plot_scaling(summary, contenders, args.plot)
        print(f"\nwrote {args.plot}")
    print(json.dumps({"bench": "dpo_scaling", "cells": summary}))


def plot_scaling(summary: list[dict], contenders: list[str], path: str) -> None:
    """Top: tokens/s against parameters per sequence length; bottom: each contender over TRL-precomputed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq_lens = sorted({e["seq_len"] for e in summary})
    peer = "trl-precomp"
    rows = 2 if all(peer in e["tokens_per_s"] for e in summary) else 1
    fig, axes = plt.subplots(rows, len(seq_lens), figsize=(5.5 * len(seq_lens), 4.2 * rows), squeeze=False)
    for col, seq_len in enumerate(seq_lens):
        cells = sorted((e for e in summary if e["seq_len"] == seq_len), key=lambda e: e["params"])
        for contender in contenders:
            points = [
                (e["params"] / 1e6, e["tokens_per_s"][contender])
                for e in cells
                if contender in e["tokens_per_s"]
            ]
            if points:
                axes[0][col].plot(*zip(*points), marker="o", label=contender)
                if rows == 2:
                    ratios = [(x, y / e["tokens_per_s"][peer]) for (x, y), e in zip(points, cells)]
                    axes[1][col].plot(*zip(*ratios), marker="o", label=contender)
        axes[0][col].set(xscale="log", yscale="log", xlabel="parameters (M)", ylabel="training tokens/s",
                         title=f"DPO, sequences of ~{seq_len} tokens")  # fmt: skip
        if rows == 2:
            axes[1][col].axhline(1.0, color="grey", lw=0.8)
            axes[1][col].set(xscale="log", xlabel="parameters (M)", ylabel=f"tokens/s / {peer}",
                             title=f"against TRL with precomputed reference, ~{seq_len} tokens")  # fmt: skip
        for ax in axes[:, col]:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="first steps left out of steady-state figures (first-call costs: allocations, optimizer state)",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", default="toy,large")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--cold-steps", type=int, default=100, help="length of the cold (first) runs")
    parser.add_argument("--cold-reps", type=int, default=1, help="runs of each cold contender per config")
    parser.add_argument("--scaling", action="store_true", help="the size x sequence-length grid instead")
    parser.add_argument("--sizes", default="1M,4M,20M,80M", help="--scaling: model sizes (toy.scaled.SHAPES)")
    parser.add_argument("--seq-lens", default="128,512", help="--scaling: tokens per sequence")
    parser.add_argument("--plot", default="docs/bench_dpo_scaling.png", help="--scaling: where the plot goes")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.scaling:
        if args.contenders == ",".join(CONTENDERS):
            args.contenders = ",".join(SCALING_CONTENDERS)
        scaling_main(args)
        return
    contenders = args.contenders.split(",")
    unknown = [k for k in contenders if k not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contenders {unknown}; valid: {', '.join(CONTENDERS)}")
    if max(args.steps, args.cold_steps) * args.batch_size > DATASET_N:
        parser.error(f"steps x batch size must fit the {DATASET_N} rows of the benchmark's data")

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_dpo_") as tmp:
        configs, results, sanity = run_configs(args, contenders, tmp)

    print(
        f"\nDPO training throughput: {args.steps} steps x {args.batch_size} pairs (warm-up {args.warmup} "
        f"excluded) of toy-paired, max_length {MAX_LENGTH}, fp32, {args.threads} threads, median of "
        f"{args.reps} interleaved reps; cold: {args.cold_steps} steps on fresh rows, empty reference cache; "
        f"wall {time.time() - started:.0f} s"
    )
    print(
        "tokens = non-padding prompt+completion tokens; memory = max over reps of ru_maxrss "
        "per job, reset at its start (+run: minus RSS at the job's start)\n"
    )
    header = (
        f"{'config':6s} {'contender':17s} {'n':>2s} {'tok/s med':>9s} {'min':>9s} {'max':>9s} {'cold tok/s':>10s} "
        f"{'ref s':>6s} {'train s':>7s} {'peak MiB':>8s} {'+run':>7s}"
    )
    print(header)
    print("-" * len(header))
    summary: dict[str, dict[str, float]] = {}
    for config in configs:
        for contender in contenders:
            runs = results[(config, contender)]
            steady = [r["steady_tokens_per_s"] for r in runs]
            cold = statistics.median(r["cold_tokens_per_s"] for r in runs)
            ref = statistics.median(r["ref_seconds"] for r in runs)
            train = statistics.median(r["train_seconds"] for r in runs)
            peak = max(r["peak_rss_mib"] for r in runs)
            delta = max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in runs)
            med, lo, hi = fmt_range(steady)
            print(
                f"{config:6s} {contender:17s} {len(runs):2d} {med} {lo} {hi} {cold:10.0f} {ref:6.2f} {train:7.1f} "
                f"{peak:8.0f} {delta:7.0f}"
            )
            summary.setdefault(config, {})[contender] = statistics.median(steady)
            summary[config][contender + "_cold"] = cold
            summary[config][contender + "_peak_rss_mib"] = peak
    print(
        "\n'ref s': reference precomputation (ours) / DPOTrainer.__init__ incl. its precomputation (TRL), s"
    )
    print(
        "cold tok/s: all tokens / (ref s + trainer.train() wall); for steady contenders, of their short runs\n"
    )

    print("sanity (rep 0): step-1 loss, steps 2-3 loss, step-0 policy logps of rows 0-1 (chosen, rejected)")
    for config in configs:
        for contender in contenders:
            r = sanity.get((config, contender)) or results[(config, contender)][0]
            losses = ", ".join(f"{x:.6f}" for x in r["losses"])
            logps = ", ".join(f"{x:.4f}" for x in r["first_logps"])
            print(
                f"  {config:6s} {contender:17s} loss [{losses}]  logps [{logps}]  first-step tokens "
                f"{r['step_tokens'][0]}"
            )
        if results[(config, contenders[0])][0]["truncation"]:
            print(f"  {config}: ours truncation: {results[(config, contenders[0])][0]['truncation']}")

    key = "large" if "large" in summary else configs[-1]
    s = summary[key]
    nan = float("nan")

    def ratio(a: str, b: str) -> float:
        return round(s.get(a, nan) / s.get(b, nan), 3)

    line = {
        "config": key,
        "tokens_per_s": round(s.get("ours", nan), 1),
        "trl_tokens_per_s": round(s.get("trl", nan), 1),
        "ratio": ratio("ours", "trl"),
        "ratio_vs_trl_precompute": ratio("ours", "trl-precomp"),
        "fraction_of_limit": ratio("ours", "limit"),
        "cold_tokens_per_s": round(s.get("ours-cold_cold", nan), 1),
        "trl_precomp_cold_tokens_per_s": round(s.get("trl-precomp-cold_cold", nan), 1),
        "cold_ratio_vs_trl_precompute": ratio("ours-cold_cold", "trl-precomp-cold_cold"),
        "limit_tokens_per_s": round(s.get("limit", nan), 1),
        "varlen_tokens_per_s": round(s.get("ours-varlen", nan), 1),
        "varlen_ratio": ratio("ours-varlen", "trl"),
        "varlen_ratio_vs_trl_precompute": ratio("ours-varlen", "trl-precomp"),
        "varlen_fraction_of_limit": ratio("ours-varlen", "limit"),
        "varlen_cold_ratio_vs_trl_precompute": ratio("ours-varlen-cold_cold", "trl-precomp-cold_cold"),
        "toy_ratio": round(summary["toy"]["ours"] / summary["toy"]["trl"], 3)
        if "toy" in summary and "ours" in summary["toy"] and "trl" in summary["toy"]
        else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "cold_steps": args.cold_steps,
        "batch_size": args.batch_size,
        "reps": args.reps,
        "threads": args.threads,
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
