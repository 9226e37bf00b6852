"""One trainer for every offline method, on `transformers.Trainer`.

Features and assumptions:
* TrainingArguments, callbacks, `report_to` backends, progress bars, checkpoints, resume and DeepSpeed all
  come from `transformers.Trainer`; this class only supplies the step: one forward pass for all C
  completions of B examples -> (B, C) log-probs -> the method's `Objective.loss`.
* Reference log-probs come from the batch (`ref_logps`, precomputed), from the policy with its LoRA
  adapter disabled, or from a frozen copy (`ref_model`); an objective that reads logits
  (`needs_token_logits`) gets both models' logits at the completion tokens.
* Metrics are averaged over the optimizer step's micro-batches and all processes, and logged under TRL's
  names with a `eval_` prefix in evaluation.
* The method's extra state (BCO's reward shift) is written into every checkpoint as
  `alignment_state.json`, last and atomically: a checkpoint without it is incomplete and is never resumed.
* The loss is a mean over the micro-batch's examples; gradient accumulation divides by the number of
  micro-batches, so batch 8 × accumulation 1 equals batch 4 × accumulation 2 (tested).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

from alignment.checkpoints import complete_checkpoints
from alignment.files import write_json_atomic
from alignment.methods.objective import Objective, StepContext
from alignment.policy.batching import REF_LOGPS, SequenceBatch
from alignment.policy.logps import (
    completion_logits,
    gather_logps,
    sequence_logps,
    sum_per_sequence,
    token_logps,
)
from alignment.policy.reference import reference_context

STATE_FILE = "alignment_state.json"


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """Newest `checkpoint-N` that holds our state file (written last), or None."""
    done = complete_checkpoints(output_dir, STATE_FILE)
    return str(done[-1]) if done else None


class _SaveObjectiveState(TrainerCallback):
    """Writes the objective's state after the Trainer has written the rest of a checkpoint."""

    def __init__(self, trainer: PreferenceTrainer):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_json_atomic(folder / STATE_FILE, {"objective": self.trainer.objective.state_dict()})
        return control


class MetricsTrainer(Trainer):
    """`transformers.Trainer` whose `compute_loss` returns a per-example mean and records named metrics
    (`_store_metrics`), averaged into each log line (train, or ``eval_``-prefixed); evaluation runs the
    training loss. The base of the preference and the reward-model trainers."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Our loss is already a per-example mean; let the Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._metrics: dict[str, dict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._losses_finite: torch.Tensor | None = (
            None  # this optimizer step's micro-batches (NonFiniteGuard)
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss.detach()).all()  # stays on the device: read once per optimizer step
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        return loss

    def step_losses_finite(self) -> bool:
        """Whether every micro-batch loss since the last call was finite (then starts the next step afresh)."""
        finite, self._losses_finite = self._losses_finite, None
        return True if finite is None else bool(finite)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def _store_metrics(self, metrics: dict[str, torch.Tensor], split: str) -> None:
        if not metrics:
            return
        names = sorted(metrics)
        values = torch.stack([metrics[n].detach().float().reshape(()) for n in names])
        # One row per process (already means over its examples): plain `gather`, since `gather_for_metrics`
        # would cut rows at the last batch as if they were padded duplicate examples.
        values = (
            self.accelerator.gather(values.unsqueeze(0)).nanmean(0)
            if self.accelerator.num_processes > 1
            else values
        )
        for name, value in zip(names, values.tolist(), strict=True):
            self._metrics[split][name].append(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for name, values in self._metrics[split].items():
            present = [v for v in values if not math.isnan(v)]  # NaN: e.g. no undesirable example in a batch
            if present:
                logs[prefix + name] = sum(present) / len(present)
        self._metrics[split].clear()
        if not math.isfinite(logs.get("loss", 0.0)) and isinstance(getattr(self, "_tr_loss", None), torch.Tensor):
            self._tr_loss.zero_()  # logged as NaN; the Trainer's reset (x -= x) would keep it NaN for the whole run
        super().log(logs, start_time)


class PreferenceTrainer(MetricsTrainer):
    """`transformers.Trainer` running the shared preference step for any `Objective`."""

    def __init__(
        self,
        *args: Any,
        objective: Objective,
        reference_mode: str,
        ref_model: nn.Module | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.reference_mode = reference_mode
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.eval().requires_grad_(False)
            self.ref_model = ref_model.to(self.args.device)
        self.add_callback(_SaveObjectiveState(self))

    # -- the step -------------------------------------------------------------------------------------
    def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        sequences: SequenceBatch = inputs.pop("sequences")
        inputs = super()._prepare_inputs(inputs) if inputs else {}  # e.g. DPO with a live reference: ids only
        inputs["sequences"] = sequences.to(self.args.device)
        return inputs

    def reference_logits(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        """(M, V) reference logits at the completion tokens, without gradients: a live reference only."""
        if self.reference_mode == "adapter":
            with reference_context(model, "adapter"):
                return completion_logits(model, inputs["sequences"])
        if self.ref_model is None:
            raise RuntimeError(
                f"objective {type(self.objective).__name__} needs the reference's logits: use a live reference "
                "(model.reference: copy, or adapter with LoRA), not precomputed log-probs"
            )
        with torch.no_grad():
            return completion_logits(self.ref_model, inputs["sequences"])

    def reference_logps(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        if REF_LOGPS in inputs:
            return inputs[REF_LOGPS].to(torch.float32)
        if self.reference_mode == "adapter":
            with reference_context(model, "adapter"):
                return sequence_logps(model, inputs["sequences"])
        if self.ref_model is None:
            raise RuntimeError(
                "reference mode 'copy' needs a ref_model; 'precomputed' needs a ref_logps column"
            )
        with torch.no_grad():
            return sequence_logps(self.ref_model, inputs["sequences"])

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.detach().clone(), reduction="sum")

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's (N_i, ...) rows (N_i may differ: padded to the largest, then cut)."""
        if self.accelerator.num_processes == 1:
            return tensor
        tensor = tensor.detach()
        sizes = self.accelerator.gather(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
        padded = self.accelerator.pad_across_processes(tensor, dim=0)
        rows = self.accelerator.gather(padded).split(padded.shape[0])
        return torch.cat([r[:n] for r, n in zip(rows, sizes, strict=True)])

    def step_context(self, inputs: dict[str, Any], *, training: bool) -> StepContext:
        return StepContext(
            batch=inputs,
            training=training,
            step=self.state.global_step,
            total_steps=self.state.max_steps,
            all_reduce_sum=self._all_reduce_sum,
            all_gather=self._all_gather,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ctx = self.step_context(inputs, training=model.training)
        sequences: SequenceBatch = inputs["sequences"]
        if self.objective.needs_token_logits:
            ctx.policy_token_logits = completion_logits(model, sequences)
            ctx.policy_token_logps = gather_logps(ctx.policy_token_logits, sequences.target_ids)
            ctx.reference_token_logits = self.reference_logits(model, inputs)
            ref_logps = sum_per_sequence(
                gather_logps(ctx.reference_token_logits, sequences.target_ids), sequences
            )
        elif self.objective.needs_token_logps:
            ctx.policy_token_logps = token_logps(model, sequences)
        if ctx.policy_token_logps is not None:
            policy_logps = sum_per_sequence(ctx.policy_token_logps, sequences)
        else:
            policy_logps = sequence_logps(model, sequences)
        if ctx.reference_token_logits is None:
            ref_logps = self.reference_logps(model, inputs)
        out = self.objective.loss(policy_logps, ref_logps, ctx)
        self._store_metrics(out.metrics, "train" if model.training else "eval")
        return (out.loss, out.metrics) if return_outputs else out.loss

    # -- checkpoints ---------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
        if resume_from_checkpoint:
            state = json.loads((Path(resume_from_checkpoint) / STATE_FILE).read_text())
            self.objective.load_state_dict(state["objective"])
        return super().train(resume_from_checkpoint=resume_from_checkpoint or None, **kwargs)
