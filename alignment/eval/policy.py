"""A policy, as evaluation sees it: something that samples completions and something that scores them.

* `sampler` — any `Sampler` (transformers `generate` or a vLLM engine): it draws the completions.
* `scorer` — a transformers causal LM whose next-token distributions give the exact per-token KL; a peft
  model can be scored (and sampled) with its adapter disabled, which is how a LoRA run's reference is the
  same network with the adapter off.
* `template` — an optional prompt template holding ``{prompt}``, applied to each prompt before sampling and
  before scoring, so π(y|x) = model(y | template(x)) (URIAL-style in-context prompting of a base model);
* `stop` — stop strings of this policy's samples (a templated base model would otherwise write the next
  in-context query itself); the scorer scores exactly the kept tokens.

Both sides of a comparison are policies, so a base model inside a template, a vLLM-served model and a
trained checkpoint are evaluated the same way. Prompts come back raw in `Completions.prompts`: the reward
judges the answer to the user's prompt, never the template around it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from alignment.data.prompts import apply_template, template_problem
from alignment.recipe.schema import SamplingConfig
from alignment.sampling.base import Completions, Sampler, SamplingParams, prompt_token_ids
from alignment.sampling.factory import build_sampler
from alignment.sampling.vllm import model_state_for_sync

logger = logging.getLogger(__name__)

#: `evaluation.backend: auto` samples with vLLM from this many parameters up. Measured on CPU
#: (scripts/bench_eval.py, 2026-12-07): a run's evaluation took 7.0 s with transformers against 10.2 s with vLLM
#: for the 1M toy model (the engine's start-up dominates), 39.5 s against 38.5 s for a 20M model and 103.9 s
#: against 99.0 s for an 80M one.
AUTO_VLLM_MIN_PARAMETERS = 20_000_000


@dataclass
class Policy:
    """One side of an evaluation (see the module docstring)."""

    sampler: Sampler
    scorer: nn.Module
    tokenizer: Any  # the scorer's tokenizer: prompt ids for scoring follow `prompt_token_ids`
    template: str | None = None
    adapter_disabled: bool = False  # sample and score the peft `scorer` with its adapter off
    stop: tuple[str, ...] = ()  # stop strings added to every sampling of this policy

    def __post_init__(self) -> None:
        problem = template_problem(self.template)
        if problem:
            raise ValueError(problem)

    def render(self, prompts: Sequence[str]) -> list[str]:
        """The prompts as this policy sees them: inside its template, if it has one."""
        return apply_template(self.template, prompts)

    def prompt_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of the rendered prompts, by the rule every sampler uses."""
        return prompt_token_ids(self.tokenizer, self.render(prompts))

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The scorer in eval mode (dropout off), with its adapter off when asked; the training mode is
        restored on exit, so a live policy can be evaluated in the middle of training."""
        was_training = self.scorer.training
        self.scorer.eval()
        adapter = self.scorer.disable_adapter() if self.adapter_disabled else contextlib.nullcontext()
        try:
            with adapter:
                yield self.scorer
        finally:
            self.scorer.train(was_training)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> Completions:
        """Sample from the scorer's current weights; the returned `prompts` are the raw ones.

        The scorer's weights are pushed into the sampler first. For a vLLM engine that is what makes it sample
        this policy: an engine is shared per checkpoint directory, with the other side of the comparison
        or with an on-policy trainer, and may hold anyone's weights. For a transformers sampler wrapping the
        scorer the push is a no-op (`TransformersSampler.load_weights`).
        """
        with self.active() as scorer:
            self.sampler.load_weights(model_state_for_sync(scorer))
            out = self.sampler.generate(self.render(prompts), replace(params, stop=params.stop + self.stop))
        return replace(out, prompts=list(prompts))


def make_policy(
    model: nn.Module,
    tokenizer: Any,
    *,
    backend: str = "transformers",
    model_dir: str | None = None,
    sampling_config: SamplingConfig | None = None,
    template: str | None = None,
    stop: Sequence[str] = (),
    adapter_disabled: bool = False,
    batch_size: int = 64,
) -> Policy:
    """A `Policy` scored by `model`, sampled by the named backend (`alignment.sampling.factory`).

    ``transformers`` samples with `model` itself, `batch_size` rows per `generate` call. ``vllm`` starts (or
    reuses) the engine of `model_dir`, a checkpoint with the model's architecture and tokenizer (the engine's
    weights are replaced by `model`'s before each sampling), with the engine settings of `sampling_config`
    (the recipe's `sampling:` section; None: the defaults).
    """
    if backend == "vllm" and model_dir is None:
        raise ValueError("the vllm backend needs model_dir, the checkpoint its engine starts from")
    config = replace(sampling_config or SamplingConfig(), backend=backend, batch_size=batch_size)
    sampler = build_sampler(config, model, tokenizer, model_dir)
    return Policy(
        sampler, model, tokenizer, template=template, adapter_disabled=adapter_disabled, stop=tuple(stop)
    )


def parameter_count(model: nn.Module) -> int:
    """Parameters of `model`, counting a ZeRO-3 partitioned parameter at its full size."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def evaluation_backend(requested: str, model: nn.Module) -> str:
    """`evaluation.backend` resolved for `model`: ``auto`` is vLLM where vLLM is installed and the model has at
    least `AUTO_VLLM_MIN_PARAMETERS` parameters (smaller ones evaluate faster with transformers, whose start
    costs nothing), else transformers; a named backend is itself."""
    if requested != "auto":
        return requested
    count = parameter_count(model)
    installed = importlib.util.find_spec("vllm") is not None
    backend = "vllm" if installed and count >= AUTO_VLLM_MIN_PARAMETERS else "transformers"
    logger.info(
        "evaluation.backend auto: %s (%.1fM parameters%s)",
        backend,
        count / 1e6,
        "" if installed else "; vLLM is not installed",
    )
    return backend
