"""A recipe's evaluation of its policy: which judge, which reference, which backend, on which prompts.

`RecipeEvaluator` turns the recipe's rules into two `Policy` objects and calls `evaluate`; the final
evaluation after training (`evaluate_recipe_model`) and the periodic one during training
(`alignment.eval.periodic`) share it, so both judge the same way:

* judge — `evaluation.reward`; else the gold reward for on-policy runs (never the proxy they optimised),
  else the recipe's reward (gold when the recipe has none);
* reference — `evaluation.reference`; else the initial model `model.name_or_path`, which for LoRA runs is
  the policy itself with its adapter off;
* both policies sample through `evaluation.backend` (`auto`: `eval.policy.evaluation_backend`), behind `evaluation.template` and
  `evaluation.reference_template`; their samples end at `evaluation.stop` / `evaluation.reference_stop`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from torch import nn

from alignment.errors import BackendError, RecipeError
from alignment.eval.gold import EvalSettings, evaluate, note_prompt_count, write_eval
from alignment.eval.history import read_history
from alignment.eval.policy import Policy, evaluation_backend, make_policy
from alignment.recipe.schema import Recipe, RewardConfig
from alignment.rewards.base import Reward

logger = logging.getLogger(__name__)


def harmful_fn_for(reward_kind: str):
    """The toy world's harmful-completion detector when the judge is its gold reward, else None."""
    if reward_kind != "gold":
        return None
    from alignment.toy.gold import is_harmful

    return is_harmful


def judge_reward_config(recipe: Recipe) -> RewardConfig:
    """The reward that judges the run (see the module docstring)."""
    if recipe.evaluation.reward is not None:
        return recipe.evaluation.reward
    if recipe.data.source == "on_policy" or recipe.reward.kind == "none":
        return RewardConfig(kind="gold")
    return recipe.reward


def load_saved_policy(recipe: Recipe, *, uses_adapter: bool):
    """The trained policy as saved in recipe.output_dir (the base + saved adapter for LoRA runs).

    For a ZeRO-3 run, where no rank holds the whole trained model: call it on one rank once training is
    over. The Trainer registered its DeepSpeed config globally, which would make `from_pretrained` build the
    model under `deepspeed.zero.Init`, a collective that hangs on a single rank: the config is dropped first
    (nothing after the final evaluation needs it).
    """
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from alignment.models import load_causal_lm

    unset_hf_deepspeed_config()
    if not uses_adapter:
        return load_causal_lm(
            recipe.output_dir, trust_remote_code=recipe.model.trust_remote_code, dtype=recipe.model.dtype
        )
    from peft import PeftModel

    base = load_causal_lm(
        recipe.model.name_or_path,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
        dtype=recipe.model.dtype,
    )
    return PeftModel.from_pretrained(base, recipe.output_dir)


class RecipeEvaluator:
    """The recipe's evaluation of any model of its run (live during training, or trained).

    Prompts and settings are loaded once, when it is built (on every rank, before any model loads), and the
    judge and a reference other than the initial model are checked, so a bad prompt set, judge or reference
    fails before training. Models are loaded only at the first call (rank 0) and kept for the next: a
    reward-model judge and the reference, so the other ranks never hold them.
    """

    def __init__(
        self,
        recipe: Recipe,
        tokenizer,
        *,
        uses_adapter: bool,
        template: str | None = None,
        stop: tuple[str, ...] = (),
    ):
        """`template` / `stop`: the evaluated policy's prompt template and stop strings when the run kind sets
        them (URIAL's prefix), in place of `evaluation.template` / `evaluation.stop`."""
        from alignment.data.prompts import distinct_prompts
        from alignment.models import check_model_name

        evaluation = recipe.evaluation
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.uses_adapter = uses_adapter
        self.template = template if template is not None else recipe.evaluation.template
        self.stop = tuple(stop) or tuple(recipe.evaluation.stop)
        self.reward_config = judge_reward_config(recipe)
        self._reward: Reward | None = None
        self._optimised: Reward | None = None  # the trained reward as a second judge (`optimised_judge`)
        if self.reward_config.kind == "model":  # loaded at the first call; checked now
            section = "evaluation.reward" if evaluation.reward is not None else "reward"
            check_model_name(
                self.reward_config.name_or_path,
                f"{section}.name_or_path",
                trust_remote_code=recipe.model.trust_remote_code,
            )
        else:
            self._reward = self._build_reward()
        self.prompts = distinct_prompts(evaluation.prompts, evaluation.seed)
        note_prompt_count(len(self.prompts), evaluation.num_prompts, "evaluation.num_prompts")
        self.settings = EvalSettings.from_config(evaluation)
        if evaluation.reference is not None:
            check_model_name(
                evaluation.reference, "evaluation.reference", trust_remote_code=recipe.model.trust_remote_code
            )
        self._reference: tuple[nn.Module, Any] | None = None  # (model, tokenizer) once loaded
        self._backend: str | None = None  # evaluation.backend, resolved at the first call (`auto`)

    def share_initial_model(self, model: nn.Module) -> None:
        """Use `model`, already loaded and unchanged from `model.name_or_path`, as the reference too (when the
        recipe names no other): an untrained run (URIAL) then holds its base model once, not twice."""
        if self.recipe.evaluation.reference is None:
            self._reference = (model, self.tokenizer)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        """`model` (the run's policy; a DDP/DeepSpeed wrapper is looked through) against the reference."""
        model = getattr(model, "module", model)
        evaluation, initial = self.recipe.evaluation, self.recipe.model.name_or_path
        if self._backend is None:
            self._backend = evaluation_backend(evaluation.backend, model)
        policy = self._policy(model, self.tokenizer, initial, template=self.template, stop=self.stop)
        if evaluation.reference is None and self.uses_adapter:
            reference = self._policy(
                model,
                self.tokenizer,
                initial,
                template=evaluation.reference_template,
                stop=evaluation.reference_stop,
                adapter_disabled=True,
            )
        else:
            if self._reference is None:
                self._reference = self._load_reference(next(model.parameters()).device)
            ref_model, ref_tokenizer = self._reference
            reference = self._policy(
                ref_model,
                ref_tokenizer,
                evaluation.reference or initial,
                template=evaluation.reference_template,
                stop=evaluation.reference_stop,
            )
        return evaluate(
            policy,
            reference,
            self.prompts,
            self.reward,
            self.settings,
            harmful_fn=harmful_fn_for(self.reward_config.kind),
            also=self.optimised_judge(),
        )

    def optimised_judge(self) -> dict[str, Reward]:
        """The reward an on-policy run optimised, as a second judge when another one (gold) judges the run: its
        win rates go into eval.json as `optimised_reward/...` (InfAlign judges best-of-N by the reward the
        policy optimised). Built at the first evaluation, on the evaluating rank."""
        trained = self.recipe.reward
        if self.recipe.data.source != "on_policy" or trained.kind == "none" or trained == self.reward_config:
            return {}
        if self._optimised is None:
            from alignment.rewards.base import build_reward

            self._optimised = build_reward(trained)
        return {"optimised_reward": self._optimised}

    @property
    def reward(self) -> Reward:
        """The judge (a reward model is loaded here, at the first evaluation, on the evaluating rank only)."""
        if self._reward is None:
            self._reward = self._build_reward()
        return self._reward

    def _build_reward(self) -> Reward:
        from alignment.rewards.base import build_reward

        try:
            return build_reward(self.reward_config)
        except RecipeError as err:  # name the section the judge came from
            if self.recipe.evaluation.reward is None or not err.path.startswith("reward"):
                raise
            raise RecipeError(f"evaluation.{err.path}", err.message) from None

    def _policy(self, model: nn.Module, tokenizer, model_dir: str, **kwargs: Any) -> Policy:
        """A policy sampled through `evaluation.backend`; a vLLM engine starts from `model_dir`, a checkpoint
        of the model's architecture, and gets the model's weights pushed before each sampling. When `auto`
        chose vLLM and its engine cannot start, the evaluation goes on with transformers (said in the log)."""
        build = functools.partial(
            make_policy, model, tokenizer, model_dir=model_dir, sampling_config=self.recipe.sampling, **kwargs
        )
        try:
            return build(backend=self._backend)
        except BackendError as err:
            if self.recipe.evaluation.backend != "auto":
                raise
            logger.warning("evaluation.backend auto: %s; evaluating with transformers instead", err)
            self._backend = "transformers"
            return build(backend="transformers")

    def _load_reference(self, device) -> tuple[nn.Module, Any]:
        from alignment.models import load_causal_lm, load_tokenizer

        m = self.recipe.model
        name = self.recipe.evaluation.reference
        if name is None:  # the initial model, exactly as the run loaded it
            model = load_causal_lm(
                m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code, dtype=m.dtype
            )
            return model.to(device), self.tokenizer
        model = load_causal_lm(name, trust_remote_code=m.trust_remote_code, dtype=m.dtype)
        return model.to(device), load_tokenizer(name, trust_remote_code=m.trust_remote_code)

    def final(self, model: nn.Module) -> dict[str, Any]:
        """The final evaluation of `model`: writes output_dir/eval.json and eval_rewards.png (with the path of
        `eval_history.jsonl` when the run evaluated during training)."""
        result = self(model)
        periodic = self.recipe.evaluation.every_n_steps is not None  # else a history there is another run's
        history = read_history(self.recipe.output_dir) if periodic else []
        write_eval(
            result, self.recipe.output_dir, history, f"{self.recipe.method.name}: {self.recipe.output_dir}"
        )
        return result
