"""The online trainer: sample → score → build examples → the method's offline loss, every step.

Features and assumptions:
* `OnlineTrainer` is `PreferenceTrainer` (so TrainingArguments, logging, checkpoints, resume, DeepSpeed and
  the loss step are the offline ones) whose dataloader yields *prompts*. Experience is made **per
  micro-batch**, inside `training_step`: the micro-batch's prompts are sampled k = `sampling.n` times from
  the current policy, scored, paired, and the pairs go through the unchanged `PreferenceTrainer.compute_loss`
  → `Objective.loss` on (B, 2) log-probs. Within an optimizer step the weights do not change, so per
  micro-batch sampling equals per-step sampling and gradient accumulation keeps its meaning.
* The experience stage is three swappable parts with typed hand-offs: `Sampler.generate` → `Samples`;
  a `Labeller` (samples → (P, k) scores; here the recipe's reward, the *proxy* reward model for online
  recipes) → `objective.select(scores)` (best/worst pairs) → `Experience`. Selfie/SPA plug in as another
  `Labeller` (the policy's implicit reward β·log π/π_init of the samples) plus SPA's refined loss as an
  Objective; CTRL as a calibrated-reward `Labeller` and an objective whose `select` keeps all k samples.
* Reference: a frozen copy of the initial policy, or the LoRA adapter disabled (`model.reference`).
* Weight sync: after every optimizer step that was not skipped (even one without pairs moves the weights
  through Adam's momentum), the policy's full HF-named weights are pushed into the sampler
  (`model_state_for_sync` → `Sampler.load_weights`) unless the sampler wraps the live policy (transformers
  backend: nothing to push). After a resume, the checkpoint's weights are pushed
  once before the first sample.
* Sampling seeds are derived from (sampling.seed, process, global step, micro-batch), so a resumed run samples
  what the uninterrupted run would have.
* A micro-batch whose prompts all tie (best = worst score) still runs a zero-weighted forward/backward so
  data-parallel processes stay in step; it contributes no loss metrics.
* The final gold evaluation judges with the gold reward, never the proxy the policy optimised (study pitfall 2).

Logged metrics (per optimizer step, averaged over the logging window), besides the loss metrics of the
objective (`loss`, `rewards/*`, `logps/*`):
* `time/sample`, `time/score`, `time/train`, `time/sync`: seconds per optimizer step spent generating, scoring,
  in forward+backward of policy and reference, and pushing weights into the sampler;
* `online/reward_chosen`, `online/reward_rejected`: mean labeller score of the kept chosen / rejected samples;
* `online/reward_mean`: mean score of all k samples; `online/ties_skipped`: prompts skipped per step;
* `online/pairs`: pairs trained on per step; `online/completion_length`: mean generated tokens per sample;
* `online/pairs_total`, `online/ties_total`: running totals since the start of training.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from transformers import TrainerCallback

from alignment.files import write_json_atomic
from alignment.policy.batching import SequenceBatch, build_packed_batch
from alignment.policy.logps import sequence_logps
from alignment.sampling.base import Completions, Sampler, SamplingParams, prompt_token_ids
from alignment.sampling.vllm import model_state_for_sync
from alignment.trainers.base import PreferenceTrainer

logger = logging.getLogger("alignment")

STATS_FILE = "online_stats.json"


# --------------------------------------------------------------------------------------------- experience


@dataclass
class Samples:
    """What the sample stage hands on. P = prompts, k = samples per prompt."""

    prompt_ids: list[list[int]]  # P x T_p, `tokenizer(prompt)["input_ids"]`, what the sampler saw
    completions: Completions  # P x k texts and generated token ids


class Labeller(Protocol):
    def __call__(self, samples: Samples) -> torch.Tensor:
        """(P, k) float scores of every sample; higher is better."""
        ...


class RewardLabeller:
    """Scores with any `Reward` (gold, function, reward model) on the P·k flattened (prompt, text) pairs."""

    def __init__(self, reward):
        self.reward = reward

    def __call__(self, samples: Samples) -> torch.Tensor:
        return samples.completions.score(self.reward).cpu()


@dataclass
class Experience:
    """One micro-batch of on-policy examples. B = examples kept, C = completions each, P/k as in `Samples`."""

    prompt_ids: list[list[int]]  # B x T_p
    completion_ids: list[list[list[int]]]  # B x C x T_i, sampled ids (end with EOS when sampling stopped)
    scores: torch.Tensor  # (B, C) labeller score of each kept completion
    all_scores: torch.Tensor  # (P, k) every sample's score
    lengths: torch.Tensor  # (P, k) generated tokens per sample
    skipped: int  # prompts without an example (all k scores tied)
    seconds: dict[str, float]  # {"sample": s, "score": s}

    @property
    def num_examples(self) -> int:
        return len(self.prompt_ids)

    def sequences(self, *, pad_token_id: int, pack_length: int) -> SequenceBatch:
        return build_packed_batch(
            self.prompt_ids, self.completion_ids, pad_token_id=pad_token_id, pack_length=pack_length
        )

    def metrics(self) -> dict[str, float]:
        return {  # NaN without examples (the mean of nothing): the trainer's log skips it
            "online/reward_chosen": float(self.scores[:, 0].mean()),
            "online/reward_rejected": float(self.scores[:, -1].mean()),
            "online/reward_mean": float(self.all_scores.mean()),
            "online/completion_length": float(self.lengths.double().mean()),
        }


Select = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, int]]


def make_experience(
    prompts: Sequence[str],
    *,
    sampler: Sampler,
    labeller: Labeller,
    select: Select,
    tokenizer,
    params: SamplingParams,
) -> Experience:
    """Sample k completions per prompt, score them, keep the examples `select` picks (rows, (B, C) index)."""
    started = time.perf_counter()
    completions = sampler.generate(list(prompts), params)
    samples = Samples(prompt_token_ids(tokenizer, completions.prompts), completions)
    sampled = time.perf_counter()
    scores = labeller(samples)
    scored = time.perf_counter()
    rows, index, skipped = select(scores)
    chosen_ids = [
        [completions.token_ids[int(r)][int(j)] for j in idx] for r, idx in zip(rows, index, strict=True)
    ]
    return Experience(
        prompt_ids=[samples.prompt_ids[int(r)] for r in rows],
        completion_ids=chosen_ids,
        scores=scores[rows].gather(1, index),
        all_scores=scores,
        lengths=torch.tensor([[len(ids) for ids in per] for per in completions.token_ids]),
        skipped=skipped,
        seconds={"sample": sampled - started, "score": scored - sampled},
    )


# --------------------------------------------------------------------------------------------- trainer


class PromptCollator:
    """Rows with a `prompt` string -> {"prompts": [str]}; tokenization happens in the sampler."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return {"prompts": [f["prompt"] for f in features]}


def shares_policy_weights(sampler: Sampler, model: nn.Module) -> bool:
    """True when the sampler generates with the trained module itself (nothing to push after a step)."""
    wrapped = getattr(sampler, "model", None)
    unwrapped = getattr(model, "module", model)
    return wrapped is not None and (wrapped is model or wrapped is unwrapped)


class _StepEnd(TrainerCallback):
    def __init__(self, trainer: OnlineTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.end_of_step()
        return control


class OnlineTrainer(PreferenceTrainer):
    """`PreferenceTrainer` whose batches are prompts; experience is made in `training_step`."""

    def __init__(
        self,
        *args: Any,
        sampler: Sampler,
        labeller: Labeller,
        sampling_params: SamplingParams,
        pack_length: int,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler = sampler
        self.labeller = labeller
        self.sampling_params = sampling_params
        self.pack_length = pack_length
        self.push_weights = not shares_policy_weights(sampler, self.model)
        self.totals = {"pairs": 0, "ties": 0, "syncs": 0}
        self.step_seconds: list[dict[str, float]] = []  # per optimizer step: the time split (bench script)
        self._step: dict[str, float] = defaultdict(float)  # this optimizer step's sums
        self._micro = 0  # micro-batch index within the optimizer step (sampling seed)
        self._sync_pending = False
        self.add_callback(_StepEnd(self))

    # -- experience ----------------------------------------------------------------------------------
    def _params_for_step(self) -> SamplingParams:
        seed = self.sampling_params.seed
        if seed is not None:
            seed = seed + 1_000_003 * self.args.process_index + 1009 * self.state.global_step + self._micro
        return dataclasses.replace(self.sampling_params, seed=seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._sync_pending:
            self.sync_weights()
        tokenizer = self.processing_class
        experience = make_experience(
            inputs["prompts"],
            sampler=self.sampler,
            labeller=self.labeller,
            select=self.objective.select,
            tokenizer=tokenizer,
            params=self._params_for_step(),
        )
        self._micro += 1
        self._record(experience)
        placeholder = experience.num_examples == 0
        if placeholder:  # keep processes in step: a zero-weighted pass over one sample
            experience = dataclasses.replace(
                experience,
                prompt_ids=experience.prompt_ids or [prompt_token_ids(tokenizer, inputs["prompts"][:1])[0]],
                completion_ids=[[[tokenizer.eos_token_id]] * self.objective.num_completions],
            )
        batch = {
            "sequences": experience.sequences(
                pad_token_id=tokenizer.pad_token_id, pack_length=self.pack_length
            ),
            "placeholder": placeholder,
        }
        started = time.perf_counter()
        loss = super().training_step(model, batch, num_items_in_batch)
        self._step["train"] += time.perf_counter() - started
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.pop("placeholder", False):
            loss = sequence_logps(model, inputs["sequences"]).sum() * 0.0
            return (loss, {}) if return_outputs else loss
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _record(self, experience: Experience) -> None:
        self._step["sample"] += experience.seconds["sample"]
        self._step["score"] += experience.seconds["score"]
        self._step["pairs"] += experience.num_examples
        self._step["ties"] += experience.skipped
        self._store_metrics({k: torch.tensor(v) for k, v in experience.metrics().items()}, "train")

    # -- after the optimizer step --------------------------------------------------------------------
    def sync_weights(self) -> float:
        """Push the policy's weights into the sampler; returns the seconds it took (0 when not needed)."""
        self._sync_pending = False
        if not self.push_weights:
            return 0.0
        started = time.perf_counter()
        self.sampler.load_weights(model_state_for_sync(self.model))
        self.totals["syncs"] += 1
        return time.perf_counter() - started

    def end_of_step(self) -> None:
        # Even a step without pairs moves the weights (Adam momentum, weight decay); only a skipped step does not.
        sync = 0.0 if self.accelerator.optimizer_step_was_skipped else self.sync_weights()
        self.totals["pairs"] += int(self._reduce(self._step["pairs"]))
        self.totals["ties"] += int(self._reduce(self._step["ties"]))
        step = {
            "time/sample": self._step["sample"],
            "time/score": self._step["score"],
            "time/train": self._step["train"],
            "time/sync": sync,
            "online/pairs": self._step["pairs"],
            "online/ties_skipped": self._step["ties"],
        }
        self._store_metrics({k: torch.tensor(float(v)) for k, v in step.items()}, "train")
        self.step_seconds.append(
            {k.removeprefix("time/"): v for k, v in step.items() if k.startswith("time/")}
        )
        self._step.clear()
        self._micro = 0

    def _reduce(self, value: float) -> float:
        return float(self._all_reduce_sum(torch.tensor(float(value), device=self.args.device)))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["online/pairs_total"] = self.totals["pairs"]
            logs["online/ties_total"] = self.totals["ties"]
        super().log(logs, start_time)

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        self._sync_pending = bool(resume_from_checkpoint)  # the engine still holds the initial weights
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)


# --------------------------------------------------------------------------------------------- run


def load_prompts(recipe, tokenizer, formats: tuple[str, ...]):
    """Any training format -> unique rendered prompts; prompts over `data.max_prompt_length` are dropped.

    They are dropped, not cut: the sampler tokenizes the prompt text itself, and a cut text would not
    re-tokenize to the cut ids.
    """
    from alignment.errors import DataError
    from alignment.run import load_examples

    tokenized, fmt, report = load_examples(
        recipe, tokenizer, ("prompts",) + tuple(f for f in formats if f != "prompts")
    )
    lengths = [len(ids) for ids in prompt_token_ids(tokenizer, tokenized["prompt"])]
    keep = [i for i, n in enumerate(lengths) if n <= recipe.data.max_prompt_length]
    if len(keep) < len(tokenized):
        logger.warning(
            "online: dropped %d of %d prompts longer than data.max_prompt_length=%d",
            len(tokenized) - len(keep),
            len(tokenized),
            recipe.data.max_prompt_length,
        )
        tokenized = tokenized.select(keep)
    if len(tokenized) == 0:
        raise DataError("data.train: no prompt fits data.max_prompt_length")
    return tokenized, fmt, report, lengths


def online_plan(recipe, num_prompts: int) -> dict[str, Any]:
    t = recipe.training
    per_step = int(t.get("per_device_train_batch_size", 8)) * int(t.get("gradient_accumulation_steps", 1))
    steps = int(t.get("max_steps", -1))
    if steps <= 0:
        steps = -(-num_prompts // per_step) * int(t.get("num_train_epochs", 1))
    s = recipe.sampling
    return {
        "prompts": num_prompts,
        "prompts_per_step (per process)": per_step,
        "optimizer_steps": steps,
        "samples_per_step": per_step * s.n,
        "sampling": f"{s.backend}, n={s.n}, temperature={s.temperature}, max_new_tokens={s.max_new_tokens}",
        "labeller": f"reward kind={recipe.reward.kind} {recipe.reward.name_or_path or ''}".strip(),
    }


def build_labeller(recipe, objective, *, device) -> Labeller:
    """The objective names its labeller; only 'reward' exists yet (Selfie adds 'implicit', CTRL 'calibrated')."""
    from alignment.errors import RecipeError
    from alignment.rewards import build_reward

    kind = getattr(objective, "labeller", "reward")
    if kind == "reward":
        if recipe.reward.kind == "none":
            raise RecipeError("reward.kind", f"method '{recipe.method.name}' labels samples with a reward")
        return RewardLabeller(build_reward(recipe.reward, device=device))
    raise RecipeError("method.name", f"unknown labeller {kind!r}")


def run_online(recipe, *, dry_run: bool = False) -> int:
    from alignment.errors import RecipeError
    from alignment.models import load_tokenizer
    from alignment.recipe.load import save_recipe
    from alignment.recipe.schema import RewardConfig, method_spec, reference_mode, to_training_arguments
    from alignment.run import build_policy, finish_training, print_dry_run, resume_argument, setup_distributed
    from alignment.sampling.factory import build_sampler, sampling_params_from_config

    spec = method_spec(recipe.method.name)
    if recipe.data.eval is not None:
        raise RecipeError(
            "data.eval", "online methods sample their own completions; use `evaluation:` instead"
        )
    if recipe.sampling.n < 2:
        raise RecipeError("sampling.n", f"online pairs need >= 2 samples per prompt, got {recipe.sampling.n}")
    tokenizer = load_tokenizer(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
    )
    prompts, fmt, report, lengths = load_prompts(recipe, tokenizer, spec.formats)
    if dry_run:
        import numpy as np

        from alignment.data.tokenize import length_stats

        stats = {"rows": len(prompts), "prompt_tokens": length_stats(np.asarray(lengths))}
        print_dry_run(recipe, fmt, {**stats, **online_plan(recipe, len(prompts))}, report)
        return 0
    setup_distributed()
    save_recipe(recipe, recipe.output_dir)
    started = time.time()
    args = to_training_arguments(recipe, resume_from_checkpoint=None)
    objective = spec.objective(recipe.method.params)
    labeller = build_labeller(
        recipe, objective, device=args.device
    )  # before the policy: a missing RM fails fast
    model = build_policy(recipe)
    mode = reference_mode(recipe)
    ref_model = copy.deepcopy(model) if mode == "copy" else None
    trainer = OnlineTrainer(
        model=model,
        args=args,
        train_dataset=objective.build_examples(prompts, None),
        data_collator=PromptCollator(),
        processing_class=tokenizer,
        objective=objective,
        reference_mode=mode,
        ref_model=ref_model,
        sampler=build_sampler(recipe.sampling, model, tokenizer, recipe.model.name_or_path),
        labeller=labeller,
        sampling_params=sampling_params_from_config(recipe.sampling),
        pack_length=(recipe.data.max_prompt_length + recipe.sampling.max_new_tokens)
        * objective.num_completions,
    )
    trainer.train(resume_from_checkpoint=resume_argument(recipe))
    if trainer.is_world_process_zero():
        write_stats(recipe.output_dir, trainer, time.time() - started)
    gold = dataclasses.replace(recipe, reward=RewardConfig(kind="gold"))  # judge with gold, never the proxy
    finish_training(recipe, trainer, tokenizer, mode, started=started, judge=gold)
    if trainer.is_world_process_zero():
        print(f"   online: {trainer.totals['pairs']} pairs, {trainer.totals['ties']} tied prompts skipped")
    return 0


def write_stats(output_dir: str, trainer: OnlineTrainer, seconds: float) -> None:
    """output_dir/online_stats.json: pair totals (the offline arm's `n`) and the mean per-step time split."""
    steps = trainer.step_seconds
    split = (
        {k: sum(s[k] for s in steps) / len(steps) for k in ("sample", "score", "train", "sync")}
        if steps
        else {}
    )
    payload = {
        "steps": trainer.state.global_step,
        "pairs_total": trainer.totals["pairs"],
        "ties_total": trainer.totals["ties"],
        "weight_syncs": trainer.totals["syncs"],
        "seconds": round(seconds, 1),
        "mean_step_seconds": split,
        "step_seconds": [{k: round(v, 4) for k, v in s.items()} for s in steps],
    }
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(output_dir) / STATS_FILE, payload)
