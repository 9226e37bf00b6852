"""The online trainer: sample → score → build examples → the method's offline loss, every step.

Features and assumptions:
* `OnlineTrainer` is `PreferenceTrainer` (so TrainingArguments, logging, checkpoints, resume, DeepSpeed and
  the loss step are the offline ones) whose dataloader yields *prompts*. Experience is made **per
  micro-batch**, inside `training_step`: the micro-batch's prompts are sampled k = `sampling.n` times from
  the current policy, scored, paired, and the pairs go through the unchanged `PreferenceTrainer.compute_loss`
  → `Objective.loss` on (B, 2) log-probs. Within an optimizer step the weights do not change, so per
  micro-batch sampling equals per-step sampling and gradient accumulation keeps its meaning.
* The experience stage (`alignment.experience`) is three swappable parts with typed hand-offs:
  `Sampler.generate` → `Samples`; a `Labeller` (samples → (P, k) scores: the recipe's reward, the implicit
  reward of the policy against its reference, or a reward calibrated against reference samples) →
  the selector `objective.selector` names (best/worst pairs, all k, best-of-n) → `Experience`.
  The labeller's `prepare` runs once at the start of `train`, with every training prompt.
* The kept completions' scores travel in the batch dict as `scores` (B, C), and the sampler's log-probs
  as `behaviour_logps` (B, C) when `sampling_params.logprobs` asks for them, so `Objective.loss` reads
  them from `StepContext.batch`.
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

import dataclasses
import logging
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from alignment.experience.labellers import Labeller
from alignment.experience.samples import Experience
from alignment.experience.selectors import SELECTORS
from alignment.experience.stage import make_experience
from alignment.policy.logps import sequence_logps
from alignment.sampling.base import Sampler, SamplingParams, prompt_token_ids
from alignment.sampling.vllm import model_state_for_sync
from alignment.trainers.base import PreferenceTrainer

logger = logging.getLogger("alignment")

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
        pack_length: int | None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.sampler = sampler
        self.labeller = labeller
        self.selector = SELECTORS.get(self.objective.selector)
        self.sampling_params = sampling_params
        self.pack_length = pack_length
        self.push_weights = not shares_policy_weights(sampler, self.model)
        self.totals = {"pairs": 0, "ties": 0, "syncs": 0}
        self.step_seconds: list[dict[str, float]] = []  # per optimizer step: the time split, tokens sampled
        self._step: dict[str, float] = defaultdict(float)  # this optimizer step's sums
        self._micro = 0  # micro-batch index within the optimizer step (sampling seed)
        self._step_started = 0.0  # wall clock at the optimizer step's first micro-batch
        self._sync_pending = False
        self.add_callback(_StepEnd(self))

    # -- experience ----------------------------------------------------------------------------------
    def _params_for_step(self) -> SamplingParams:
        seed = self.sampling_params.seed
        if seed is not None:
            seed = seed + 1_000_003 * self.args.process_index + 1009 * self.state.global_step + self._micro
        return dataclasses.replace(self.sampling_params, seed=seed)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._micro == 0:
            self._step_started = time.perf_counter()
        if self._sync_pending:
            self.sync_weights()
        tokenizer = self.processing_class
        experience = make_experience(
            inputs["prompts"],
            sampler=self.sampler,
            labeller=self.labeller,
            select=self.selector,
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
            **experience.columns(),
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
        self._step["generated_tokens"] += float(experience.lengths.sum())
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
            | {"step": time.perf_counter() - self._step_started}  # all of it: + optimizer, collation, logging
            | {"generated_tokens": self._step["generated_tokens"]}  # this process's, for tokens/s
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
        if self.train_dataset is not None:
            self.labeller.prepare(self.train_dataset["prompt"])
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
