"""DeepSpeed ZeRO-2 / ZeRO-3: real 2-process `accelerate launch` runs of recipes/dpo.yaml on CPU (gloo).

Three tiny runs of the shipped recipe (64 pairs, 3 optimizer steps, global batch 8, a 4-prompt gold
evaluation), each a fresh process with its own reference log-prob cache:
  * single process, per-device batch 8 (the reference);
  * ZeRO-2 and ZeRO-3 through recipes/accelerate/zero{2,3}.yaml, 2 processes with per-device batch 4.

Same examples in the first global batch: the Trainer's sampler is accelerate's seedable random sampler,
seeded by `training.seed` in every run. With 2 processes accelerate shards it by batches (per-device batch
4): rank 0 takes the permutation's first 4 indices, rank 1 the next 4, which are exactly the 8 indices of
the single-process batch. No sampler option is needed, and the comparison checks it.

What the comparison can and cannot see: at step 1 the policy *is* the reference, so the DPO loss is
log 2 for any batch; the first-step loss matching is necessary but says nothing about the batch. The
first batch's mean log-probs (`logps/chosen`, `logps/rejected`) and the first step's gradient norm do depend
on the batch (the norm also on ZeRO's gradient reduction), and the losses of steps 2-3 depend on the
optimizer updates (warmup off, so every step updates): all of them must match.
The saved models must load, differ from the initial model, and match the single-process weights; the
final evaluation (rank 0 only; under ZeRO-3 on the saved model) must match the single-process one.

A 2-process launch takes ~30-45 s on an idle 2-core machine (mostly imports), ~75-90 s on a loaded one.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from launching import REPO, free_port, run_logged

pytestmark = [pytest.mark.deepspeed, pytest.mark.integration]

RECIPE = REPO / "recipes" / "dpo.yaml"
GLOBAL_BATCH = 8
RTOL = 1e-5
OVERRIDES = [
    "data.train.args.n=64",
    "training.max_steps=3",
    "training.warmup_steps=0",
    "training.logging_steps=1",
    "training.disable_tqdm=true",
    "evaluation.num_prompts=4",
    "evaluation.samples_per_prompt=2",
    "evaluation.max_new_tokens=16",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Output directories of the single-process, ZeRO-2 and ZeRO-3 runs."""
    root = tmp_path_factory.mktemp("deepspeed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    # Shared toy-data cache (the data are deterministic), one thread per process as torchrun sets for ranks.
    env.update(ALIGNMENT_CACHE=str(root / "cache"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    outputs = {}
    for name in ("single", "zero2", "zero3"):
        out = root / name
        args = [*OVERRIDES, f"output_dir={out}", f"model.reference_cache_dir={root / (name + '-refcache')}"]
        if name == "single":
            cmd = [sys.executable, "-m", "alignment", str(RECIPE), *args]
            cmd.append(f"training.per_device_train_batch_size={GLOBAL_BATCH}")
        else:
            cmd = [
                sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(REPO / "recipes" / "accelerate" / f"{name}.yaml"),
                "--main_process_port", str(free_port()),
                "-m", "alignment", str(RECIPE), *args,
                f"training.per_device_train_batch_size={GLOBAL_BATCH // 2}",
            ]  # fmt: skip
        started = time.time()
        run_logged(cmd, out, env, root)
        print(f"\n{name} run: {time.time() - started:.0f} s")  # shown with -s
        outputs[name] = out
    return outputs


def _log(out: Path) -> list[dict]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "loss" in h]


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_first_step_loss_and_updates_match_single_process(runs, stage):
    single, sharded = _log(runs["single"]), _log(runs[stage])
    assert [h["step"] for h in sharded] == [h["step"] for h in single] == [1, 2, 3]
    # the acceptance criterion: the same first-step loss (log 2 for DPO at the reference, any batch)
    assert sharded[0]["loss"] == pytest.approx(single[0]["loss"], rel=RTOL)
    assert single[0]["loss"] == pytest.approx(math.log(2), rel=RTOL)
    # batch-dependent: the first batch's mean log-probs (the same 8 examples) and gradient norm, then the
    # losses after one and two updates
    for key in ("logps/chosen", "logps/rejected", "grad_norm"):
        assert sharded[0][key] == pytest.approx(single[0][key], rel=RTOL), key
    for s, d in zip(single[1:], sharded[1:], strict=True):
        assert d["loss"] == pytest.approx(s["loss"], rel=RTOL)
        assert d["grad_norm"] == pytest.approx(s["grad_norm"], rel=RTOL)
    assert sharded[-1]["loss"] != pytest.approx(math.log(2), rel=1e-5)  # training did move the policy


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_saved_model_loads_and_matches_single_process(runs, stage):
    from transformers import AutoModelForCausalLM

    from alignment.models import load_causal_lm

    initial = load_causal_lm("toy-base").state_dict()
    single = AutoModelForCausalLM.from_pretrained(runs["single"], dtype=torch.float32).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(runs[stage], dtype=torch.float32).state_dict()
    assert saved.keys() == initial.keys()
    assert all(torch.isfinite(v).all() for v in saved.values())
    moved = max((saved[k] - initial[k]).abs().max().item() for k in initial)
    off = max((saved[k] - single[k]).abs().max().item() for k in initial)
    assert moved > 1e-4, "the saved model is the initial one"
    # Single-process vs sharded: the gradients agree to the last bits (first-step test), but Adam divides each
    # update by √v, so a parameter whose gradients are tiny turns last-bit differences into update differences
    # of up to the learning rate: measured 2e-7 and, on other batches, 1.1e-5 (2.7 % of the 4e-4 moved).
    assert off < moved / 20, (off, moved)
    assert (runs[stage] / "tokenizer.json").exists()


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_final_evaluation_matches_single_process(runs, stage):
    """Rank 0 evaluates (ZeRO-3: the saved model) without hanging, and sees the trained weights."""
    single = json.loads((runs["single"] / "eval.json").read_text())
    sharded = json.loads((runs[stage] / "eval.json").read_text())
    assert sharded["num_samples"] == single["num_samples"] == 8
    for key in ("gold_reward", "reference_gold_reward", "win_rate", "kl"):
        assert sharded[key] == pytest.approx(single[key], rel=1e-4, abs=1e-6), key
    assert [e["policy"] for e in sharded["examples"]] == [e["policy"] for e in single["examples"]]
