"""Run a validated recipe: load data, build the method's examples, train, save, evaluate.

The order matters for users: everything that can fail because of their input (recipe, data files,
columns, formats) is checked before the model is loaded, and `--dry-run` stops right there.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from alignment.errors import DataError
from alignment.recipe.load import dump_recipe, save_recipe
from alignment.recipe.schema import Recipe, method_spec, reference_mode, to_training_arguments

logger = logging.getLogger("alignment")


def setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, stream=sys.stderr
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_distributed() -> None:
    """DeepSpeed launches: create accelerate's shared state before the Trainer (`use_configured_state`).

    On CPU accelerate picks no backend without an accelerator, so give it gloo explicitly (see shared
    notes/deepspeed_cpu.md: without this every rank believes it is alone and DeepSpeed rejects the batch
    sizes), and leave DeepSpeed's shared-memory all-reduce out: it is a C++ op compiled on first use (40 s
    to minutes), and plain gloo is enough for CPU runs. On GPU machines accelerate's own choice (nccl) stands.
    """
    import torch

    if os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true":
        return
    from accelerate import PartialState

    if torch.cuda.is_available():
        PartialState()
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    PartialState(backend="gloo")


def main_process_first():
    """Rank 0 first, then the others (they then read its caches); a no-op outside distributed runs."""
    from accelerate import PartialState

    return PartialState().main_process_first() if PartialState._shared_state else contextlib.nullcontext()


def zero_stage(trainer) -> int:
    """The DeepSpeed ZeRO stage of the trainer's run, 0 without DeepSpeed."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    return int(plugin.zero_stage) if plugin is not None else 0


def load_examples(recipe: Recipe, tokenizer, formats: tuple[str, ...], spec_key: str = "train"):
    """Dataset spec -> validated, converted, tokenized dataset, its format and the truncation report."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec
    from alignment.data.tokenize import tokenize_dataset

    spec = getattr(recipe.data, spec_key)
    seed = int(recipe.training.get("seed", 0))
    raw = load_dataset_spec(spec, seed=seed, key=f"data.{spec_key}")
    dataset, fmt = prepare_for_method(raw, formats, source=f"data.{spec_key}")
    tokenized, report = tokenize_dataset(
        dataset,
        fmt,
        tokenizer,
        max_length=recipe.data.max_length,
        max_prompt_length=recipe.data.max_prompt_length,
        chat_template=recipe.data.chat_template,
        num_proc=recipe.data.num_proc,
    )
    if len(tokenized) == 0:
        raise DataError(f"data.{spec_key}: no example survived tokenization ({report.summary()})")
    return tokenized, fmt, report


def print_dry_run(recipe: Recipe, fmt: str, stats: dict[str, Any], report) -> None:
    print("# resolved recipe\n" + dump_recipe(recipe))
    print(f"# training data: format {fmt}")
    for key, value in stats.items():
        print(f"  {key}: {value}")
    print(f"# truncation: {report.summary()}")
    print("dry run: recipe and data are valid; nothing was trained.")


def build_policy(recipe: Recipe):
    from alignment.models import load_causal_lm

    model = load_causal_lm(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
        dtype=recipe.model.dtype,
        attn_implementation=recipe.model.attn_implementation,
    )
    lora = recipe.model.lora
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model


def build_context(recipe: Recipe, model, tokenizer):
    from alignment.methods.objective import BuildContext
    from alignment.sampling.factory import build_sampler

    return BuildContext(
        tokenizer=tokenizer,
        model=model,
        seed=int(recipe.training.get("seed", 0)),
        max_length=recipe.data.max_length,
        sampler_factory=lambda: build_sampler(recipe.sampling, model, tokenizer, recipe.model.name_or_path),
        sampling_config=recipe.sampling,
    )


def final_evaluation(recipe: Recipe, model, tokenizer, *, uses_adapter: bool) -> dict[str, Any] | None:
    """Gold evaluation against the reference (adapter disabled, or the initial model reloaded)."""
    if not recipe.evaluation.enabled:
        return None
    from alignment.eval.run import evaluate_recipe_model

    return evaluate_recipe_model(recipe, model, tokenizer, uses_adapter=uses_adapter)


def run_recipe(recipe: Recipe, *, dry_run: bool = False) -> int:
    setup_logging()
    spec = method_spec(recipe.method.name)
    if spec.kind == "online":
        from alignment.trainers.online import run_online

        return run_online(recipe, dry_run=dry_run)
    if spec.kind == "reward_model":
        from alignment.trainers.reward_model import run_reward_model

        return run_reward_model(recipe, dry_run=dry_run)
    return run_offline(recipe, dry_run=dry_run)


def run_offline(recipe: Recipe, *, dry_run: bool = False) -> int:
    from alignment.data.tokenize import dataset_statistics
    from alignment.models import load_tokenizer

    spec = method_spec(recipe.method.name)
    tokenizer = load_tokenizer(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    train, fmt, report = load_examples(recipe, tokenizer, spec.formats)
    evaluation = load_examples(recipe, tokenizer, spec.formats, "eval")[0] if recipe.data.eval else None
    if dry_run:
        print_dry_run(recipe, fmt, dataset_statistics(train, fmt), report)
        return 0
    resume = resume_argument(recipe)  # a bad checkpoint path fails before the model loads
    setup_distributed()
    save_recipe(recipe, recipe.output_dir)
    started = time.time()
    trainer, mode = prepare_offline_trainer(recipe, tokenizer, train, evaluation)
    trainer.train(resume_from_checkpoint=resume)
    finish_training(recipe, trainer, tokenizer, mode, started=started)
    return 0


def finish_training(
    recipe: Recipe, trainer, tokenizer, mode: str, *, started: float, judge: Recipe | None = None
):
    """Save on all ranks, then evaluate and summarise on rank 0; returns the eval result there (else None).

    `judge` is the recipe whose evaluation/reward sections judge the run (online runs pass one with the
    gold reward, never the proxy they optimised). Evaluation runs on rank 0 alone, with no collective:
    under ZeRO-3 each rank holds only a shard of the weights, so rank 0 evaluates the saved (gathered) model.
    """
    trainer.save_model(recipe.output_dir)  # all ranks: under ZeRO-3 this gathers the shards
    trainer.save_state()  # trainer_state.json (log history) in output_dir
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(recipe.output_dir)
    logger.info("training finished in %.1f s", time.time() - started)
    sharded = zero_stage(trainer) == 3
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return None
    judge = judge or recipe
    model = trainer.model
    if sharded and judge.evaluation.enabled:
        from alignment.eval.run import load_saved_policy

        model = load_saved_policy(recipe, uses_adapter=mode == "adapter").to(trainer.args.device)
    result = final_evaluation(judge, model, tokenizer, uses_adapter=mode == "adapter")
    print_summary(recipe, trainer, result)
    return result


def prepare_offline_trainer(recipe: Recipe, tokenizer, train, evaluation=None):
    """Policy, the method's examples, reference log-probs and the trainer; returns (trainer, reference mode)."""
    spec = method_spec(recipe.method.name)
    model = build_policy(recipe)
    objective = spec.objective(recipe.method.params)
    context = build_context(recipe, model, tokenizer)
    train = objective.build_examples(train, context)
    evaluation = objective.build_examples(evaluation, context) if evaluation is not None else None
    mode = reference_mode(recipe)
    ref_model = None
    if mode == "precomputed":
        from alignment.policy.reference import add_reference_logps

        cache = recipe.model.reference_cache_dir
        with main_process_first():  # one writer of the on-disk cache; the other ranks load it
            train = add_reference_logps(train, model, pad_token_id=tokenizer.pad_token_id, cache_dir=cache)
            if evaluation is not None:
                evaluation = add_reference_logps(
                    evaluation, model, pad_token_id=tokenizer.pad_token_id, cache_dir=cache
                )
    elif mode == "copy":
        ref_model = copy.deepcopy(model)
    return build_trainer(recipe, model, tokenizer, objective, mode, ref_model, train, evaluation), mode


def resume_argument(recipe: Recipe) -> str | bool | None:
    """training.resume_from_checkpoint: a path, or 'last'/'true' for the newest complete checkpoint."""
    value = recipe.training.get("resume_from_checkpoint")
    if value is None:
        return None
    if str(value).lower() in ("true", "last"):
        return True
    if not Path(value).is_dir():
        raise DataError(f"training.resume_from_checkpoint: '{value}' is not a checkpoint directory")
    return str(value)


def build_trainer(recipe, model, tokenizer, objective, mode, ref_model, train, evaluation):
    from alignment.policy.batching import CompletionCollator
    from alignment.trainers.base import PreferenceTrainer

    extra: dict[str, Any] = {"resume_from_checkpoint": None}
    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        extra["accelerator_config"] = {"use_configured_state": True}
    args = to_training_arguments(recipe, **extra)
    pack_length = recipe.data.max_length * max(2, objective.num_completions)
    return PreferenceTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=CompletionCollator(tokenizer.pad_token_id, packed=True, pack_length=pack_length),
        processing_class=tokenizer,
        objective=objective,
        reference_mode=mode,
        ref_model=ref_model,
    )


def print_summary(recipe: Recipe, trainer, result: dict[str, Any] | None) -> None:
    history = [h for h in trainer.state.log_history if "loss" in h]
    print(f"\n== {recipe.method.name}: {trainer.state.global_step} steps, output in {recipe.output_dir}")
    if history:
        last = history[-1]
        keys = [k for k in ("loss", "rewards/accuracies", "rewards/margins", "kl", "delta") if k in last]
        print("   last log: " + ", ".join(f"{k} {last[k]:.4g}" for k in keys))
    if result is not None:
        keys = ("win_rate", "gold_reward", "reference_gold_reward", "kl", "length", "harmful_rate")
        print("   eval: " + ", ".join(f"{k} {result[k]:.4g}" for k in keys if k in result))
        print(f"   wrote {Path(recipe.output_dir) / 'eval.json'}")
