"""The shared offline trainer on the toy model: exact first-step losses, accumulation, resume, δ handling."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from alignment.data.examples import load_examples
from alignment.kinds.static import prepare_static_trainer
from alignment.models import load_tokenizer
from alignment.recipe.load import recipe_from_dict
from alignment.trainers.base import STATE_FILE, last_complete_checkpoint

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

DATA = {
    "dpo": {"name": "toy-paired", "args": {"n": 32, "temperature": 0.0}},
    "ipo": {"name": "toy-paired", "args": {"n": 32, "temperature": 0.0}},
    "kto": {"name": "toy-unpaired", "args": {"n": 32}},
    "bco": {"name": "toy-unpaired", "args": {"n": 32}},
    "d2o": {"name": "toy-negatives", "args": {"n": 16}},
}


def make_recipe(tmp_path: Path, method: dict, *, subdir: str = "run", model: dict | None = None, **training):
    name = method["name"]
    return recipe_from_dict(
        {
            "method": method,
            "data": {"train": DATA[name], "max_length": 96, "max_prompt_length": 32},
            "sampling": {"max_new_tokens": 24},
            "training": {
                "learning_rate": 1e-3,
                "per_device_train_batch_size": 8,
                "max_steps": 1,
                "logging_steps": 1,
                "lr_scheduler_type": "constant",
                "disable_tqdm": True,
                **training,
            },
            "model": {"reference_cache_dir": str(tmp_path / "refcache"), **(model or {})},
            "evaluation": {"enabled": False},
            "output_dir": str(tmp_path / subdir),
        }
    )


def build(recipe):
    tokenizer = load_tokenizer(recipe.model.name_or_path)
    train, _, _ = load_examples(recipe, tokenizer, _formats(recipe))
    trainer, _ = prepare_static_trainer(recipe, tokenizer, train)
    return trainer


def _formats(recipe):
    from alignment.recipe.schema import method_spec

    return method_spec(recipe.method.name).formats


def weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "method, at_init",
    [
        # policy = reference at step 0, so every log-ratio is 0:
        ({"name": "dpo", "beta": 0.1}, math.log(2)),  # −log σ(0)
        ({"name": "ipo", "beta": 0.5}, 1.0),  # (0 − 1/(2·0.5))²
        ({"name": "kto", "beta": 0.1}, 0.5),  # λ·(1 − σ(0)), z₀ = 0
        ({"name": "bco", "beta": 0.1}, math.log(2)),  # −log σ(0 − δ), δ = 0
        ({"name": "d2o", "beta": 0.1, "alpha": 0.1, "num_samples": 2}, math.log(2)),  # −log σ(0)
    ],
)
def test_first_step_loss_is_the_at_reference_value(tmp_path, method, at_init):
    """The precomputed reference (padded batches) and the training forward (packed) agree to float error."""
    trainer = build(make_recipe(tmp_path, method))
    trainer.train()
    first = trainer.state.log_history[0]["loss"]
    assert first == pytest.approx(at_init, abs=1e-5)


@pytest.mark.parametrize("name", ["dpo", "kto", "bco"])
def test_gradient_accumulation_matches_a_full_batch(tmp_path, name):
    """batch 8 × accumulation 1 and batch 4 × accumulation 2 take the same optimizer step.

    Plain SGD, so the weights move by lr·gradient: Adam's normalisation would magnify float noise in
    near-zero gradients and hide what is being compared. KTO's z₀ and BCO's δ are statistics of each
    micro-batch: at this first step (policy = reference) they are 0 in every one, so the step checks how the
    trainer averages micro-batches; later steps differ (tests/methods/test_unpaired_objectives.py says why).
    """
    sgd = {"optim": "sgd", "learning_rate": 0.1}
    full = build(make_recipe(tmp_path, {"name": name}, subdir="full", **sgd))
    full.train()
    accumulated = build(
        make_recipe(
            tmp_path,
            {"name": name},
            subdir="ga",
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            **sgd,
        )
    )
    accumulated.train()
    a, b = weights(full), weights(accumulated)
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-6
    initial = build(make_recipe(tmp_path, {"name": name}, subdir="init", max_steps=0))
    assert max(float((a[k] - v).abs().max()) for k, v in weights(initial).items()) > 1e-4


class _Interrupt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights_and_delta(tmp_path):
    settings = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "per_device_train_batch_size": 4}
    straight = build(make_recipe(tmp_path, {"name": "bco"}, subdir="straight", **settings))
    straight.train()

    interrupted = build(make_recipe(tmp_path, {"name": "bco"}, subdir="resumed", **settings))
    interrupted.add_callback(_Interrupt())
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    checkpoint = last_complete_checkpoint(tmp_path / "resumed")
    assert checkpoint is not None and checkpoint.endswith("checkpoint-2")
    assert (Path(checkpoint) / STATE_FILE).exists()

    resumed = build(make_recipe(tmp_path, {"name": "bco"}, subdir="resumed", **settings))
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4
    assert resumed.objective.delta == pytest.approx(straight.objective.delta, abs=1e-7)
    assert straight.objective.delta != 0.0
    a, b = weights(straight), weights(resumed)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


def test_bco_delta_is_frozen_in_evaluation(tmp_path):
    trainer = build(make_recipe(tmp_path, {"name": "bco"}, max_steps=2))
    trainer.train()
    before = trainer.objective.state_dict()
    trainer.evaluate(eval_dataset=trainer.train_dataset)
    assert trainer.objective.state_dict() == before


def test_main_recipe_runs_end_to_end_from_the_command_line(tmp_path):
    """The README's main job (recipes/bco.yaml), shrunk: trains, saves, evaluates, writes eval.json."""
    out = tmp_path / "bco"
    cmd = [
        sys.executable,
        "-m",
        "alignment",
        "recipes/bco.yaml",
        "data.train.args.n=64",
        "training.max_steps=2",
        "evaluation.num_prompts=8",
        f"output_dir={out}",
        f"model.reference_cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "win_rate" in done.stdout
    for name in ("eval.json", "recipe.yaml", "model.safetensors", "tokenizer.json", "eval_rewards.png"):
        assert (out / name).exists(), name


def test_lora_uses_the_adapter_free_network_as_reference(tmp_path):
    """LoRA: reference = adapter disabled, so step 1 is exactly ln 2; only adapter weights train."""
    lora = {"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}}
    trainer = build(make_recipe(tmp_path, {"name": "dpo"}, model=lora, max_steps=3))
    assert trainer.reference_mode == "adapter" and trainer.ref_model is None
    before = weights(trainer)
    trainer.train()
    assert trainer.state.log_history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    after = weights(trainer)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)


def test_frozen_copy_reference_matches_the_precomputed_one(tmp_path):
    """reference: copy (a frozen model run every step) gives the same two first losses as precomputed."""
    losses = {}
    for mode in ("copy", "precomputed"):
        trainer = build(
            make_recipe(tmp_path, {"name": "dpo"}, subdir=mode, model={"reference": mode}, max_steps=2)
        )
        assert (trainer.ref_model is not None) == (mode == "copy")
        trainer.train()
        losses[mode] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses["copy"] == pytest.approx(losses["precomputed"], abs=1e-5)
    assert losses["copy"][1] != pytest.approx(math.log(2), abs=1e-4)  # the second step really moved


def test_logged_means_skip_batches_without_a_class(tmp_path):
    """KTO/BCO report NaN for a class absent from a micro-batch; the logged mean is over the others."""
    trainer = build(make_recipe(tmp_path, {"name": "kto"}, max_steps=0))
    for value in (float("nan"), 1.0, 3.0):
        trainer._store_metrics({"rewards/rejected": torch.tensor(value)}, "train")
    trainer.log({"loss": 0.5})
    assert trainer.state.log_history[-1]["rewards/rejected"] == pytest.approx(2.0)
