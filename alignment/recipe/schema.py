"""The recipe schema: one frozen dataclass per YAML section, help text on every field.

```yaml
method: {name: bco, beta: 0.1, udm: true}      # MethodConfig: name + that method's <Name>Params
model: {name_or_path: toy-base}                  # ModelConfig (+ lora)
data: {train: {name: toy-unpaired}}              # DataConfig of DatasetSpec
training: {learning_rate: 5.0e-6, seed: 0}       # any transformers.TrainingArguments field
sampling: {...}; reward: {...}; evaluation: {...}
output_dir: runs/{method}
```
`alignment.recipe.load` builds these from YAML; constructing them in Python runs the same range checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from alignment.data.prompts import template_problem
from alignment.errors import RecipeError
from alignment.recipe.fields import check, coerce, param, unknown_key_message
from alignment.recipe.training_types import training_argument_types

DataFormat = Literal["auto", "paired", "unpaired", "negatives", "prompts"]

# Our defaults over TrainingArguments' own (which target large GPU runs): small toy-friendly steps, a
# checkpoint every tenth of the run (the last two kept), no trackers unless asked, seed 0, and columns kept (our collators need them).
TRAINING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1.0e-5,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "optim": "adamw_torch",
    "max_grad_norm": 1.0,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "num_train_epochs": 1,
    "max_steps": -1,
    "logging_steps": 10,
    "eval_strategy": "no",
    "save_strategy": "steps",  # a crash loses at most a tenth of the steps (Ctrl-C: none, it saves); resume
    "save_steps": 0.1,  # with training.resume_from_checkpoint=last. < 1: a fraction of the run's steps
    "save_total_limit": 2,
    "report_to": "none",
    "seed": 0,
    "bf16": False,
    "remove_unused_columns": False,
    "logging_nan_inf_filter": False,  # a NaN loss is logged as NaN (transformers would log a stale average)
    "max_nonfinite_steps": 3,  # ours: steps skipped for a NaN/inf loss or gradient before the run stops
}

#: training keys of our own, not TrainingArguments fields (read by the lifecycle, never passed to transformers)
ALIGNMENT_TRAINING_KEYS: dict[str, type] = {"max_nonfinite_steps": int}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig:
    enabled: bool = param(False, help="Train LoRA adapters instead of all weights (peft).")
    r: int = param(16, help="LoRA rank.")
    alpha: float = param(32, help="LoRA scaling numerator (lora_alpha); the update is scaled by alpha / r.")
    dropout: float = param(0.05, help="Dropout on the LoRA branch, in [0, 1).")
    target_modules: list[str] | str = param(
        "all-linear",
        help="Module names to adapt, or 'all-linear' for every linear layer but the output head.",
    )

    def __post_init__(self) -> None:
        check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name_or_path: str = param(
        "toy-base", help="Policy model: an alias (toy-base), a local directory or a hub id."
    )
    revision: str | None = param(None, help="Hub revision (branch, tag or commit) of the model.")
    trust_remote_code: bool = param(False, help="Allow model code from the checkpoint (off: safer).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = param("float32", help="Weight dtype at load.")
    attn_implementation: str | None = param(None, help="transformers attention kernel (eager, sdpa, ...).")
    lora: LoraConfig = param(help="LoRA adapters (model.lora.enabled: true to use them).", factory=LoraConfig)
    reference: Literal["auto", "copy", "adapter", "precomputed"] = param(
        "auto",
        help="Reference policy: auto = adapter when LoRA, else precomputed log-probs for static data, else a "
        "frozen copy.",
    )
    reference_cache_dir: str = param(
        ".cache/alignment/reference", help="Where precomputed reference log-probs are cached."
    )
    disable_dropout: bool = param(
        True,
        help="Turn the model's dropout off (as TRL does), so the policy and its reference are one network at "
        "the start; model.lora.dropout still applies to the adapter.",
    )

    def __post_init__(self) -> None:
        check(bool(self.name_or_path), "name_or_path", "must not be empty")
        check(
            self.reference != "adapter" or self.lora.enabled,
            "reference",
            "'adapter' needs LoRA (set model.lora.enabled: true) or choose 'copy' / 'precomputed'",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    SHORTHAND: ClassVar[str] = "name"  # `train: toy-paired` is read as `train: {name: toy-paired}`

    name: str = param(
        help="Dataset: a registered builder (toy-paired, ...), a local .json/.jsonl/.parquet/.csv file or a "
        "hub id."
    )
    split: str = param("train", help="Split to read (builders: train or eval).")
    subset: str | None = param(None, help="Hub dataset configuration (subset) name.")
    format: DataFormat = param(
        "auto", help="Column layout: paired, unpaired, negatives, prompts; auto detects it from the columns."
    )
    args: dict[str, Any] = param(help="Extra keyword arguments for a dataset builder.", factory=dict)
    num_samples: int | None = param(None, help="Keep only the first N examples (None: all).")

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "must not be empty")
        check(
            self.num_samples is None or self.num_samples >= 1,
            "num_samples",
            f"must be >= 1, got {self.num_samples}",
        )


MISSING_TRAIN = "missing required value: Training dataset (required), e.g. {name: toy-paired}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    train: DatasetSpec | None = param(
        None, help="Training dataset (required by every method that trains), e.g. {name: toy-paired}."
    )
    source: Literal["static", "on_policy"] | None = param(
        None,
        help="static: train on data.train as given; on_policy: take its unique prompts and train on samples "
        "of the current policy, labelled by `reward:` every step (DPO/IPO: online DPO/IPO). Default: the "
        "method's own.",
    )
    eval: DatasetSpec | None = param(None, help="Optional evaluation dataset for the trainer's eval loss.")
    pools: list[DatasetSpec] = param(
        help="Selfie: the unlabelled prompt pools, one per self-labelling iteration, disjoint from data.train "
        "and from each other (their prompts are read; labels, if any, are ignored).",
        factory=list,
    )
    max_length: int = param(256, help="Maximum tokens of prompt + completion (the completion is cut first).")
    max_prompt_length: int = param(128, help="Maximum prompt tokens (prompts are cut from the left).")
    chat_template: str | None = param(None, help="Jinja chat template overriding the tokenizer's own.")
    num_proc: int = param(1, help="Processes for dataset tokenisation.")

    def __post_init__(self) -> None:
        check(self.max_length >= 2, "max_length", f"must be >= 2, got {self.max_length}")
        check(
            1 <= self.max_prompt_length < self.max_length,
            "max_prompt_length",
            f"must be >= 1 and < max_length ({self.max_length}), got {self.max_prompt_length}",
        )
        check(self.num_proc >= 1, "num_proc", f"must be >= 1, got {self.num_proc}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VLLMConfig:
    gpu_memory_utilization: float = param(0.3, help="Fraction of GPU memory vLLM may take, in (0, 1].")
    max_model_len: int | None = param(
        None, help="vLLM context length (None: data.max_length + max_new_tokens)."
    )
    enforce_eager: bool = param(True, help="Disable CUDA graphs (faster start, slower decode).")
    kv_cache_space_gib: float = param(1.0, help="KV-cache size in GiB for the CPU backend.")

    def __post_init__(self) -> None:
        u = self.gpu_memory_utilization
        check(0 < u <= 1, "gpu_memory_utilization", f"must be in (0, 1], got {u}")
        check(self.max_model_len is None or self.max_model_len >= 1, "max_model_len", "must be >= 1")
        check(
            self.kv_cache_space_gib > 0, "kv_cache_space_gib", f"must be > 0, got {self.kv_cache_space_gib}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    backend: Literal["transformers", "vllm"] = param("transformers", help="Generation backend.")
    temperature: float = param(1.0, help="Sampling temperature (0: greedy).")
    top_p: float = param(1.0, help="Nucleus sampling mass, in (0, 1].")
    top_k: int = param(0, help="Top-k sampling (0: off).")
    max_new_tokens: int = param(48, help="Maximum generated tokens per completion.")
    n: int = param(2, help="Completions sampled per prompt.")
    seed: int = param(0, help="Sampling seed.")
    stop: list[str] = param(
        help="Stop strings: a completion ends before the first occurrence of any of them (the text never "
        "holds one; the token in which it begins is dropped). Empty: stop on EOS/max_new_tokens only.",
        factory=list,
    )
    batch_size: int = param(64, help="Prompts per generation batch (transformers backend).")
    vllm: VLLMConfig = param(help="vLLM engine settings (sampling.backend: vllm).", factory=VLLMConfig)

    def __post_init__(self) -> None:
        check(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        check(self.top_k >= 0, "top_k", f"must be >= 0, got {self.top_k}")
        for name in ("max_new_tokens", "n", "batch_size"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        for i, stop in enumerate(self.stop):
            check(bool(stop), f"stop[{i}]", "must not be empty")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RewardConfig:
    kind: Literal["gold", "model", "function", "none"] = param(
        "gold", help="Reward: the toy gold reward, a reward model, a Python function, or none."
    )
    name_or_path: str | None = param(None, help="Reward model (required when kind is 'model').")
    function: str | None = param(
        None, help="'module:function' scoring (prompts, completions) (kind 'function')."
    )
    batch_size: int = param(64, help="Completions scored per batch.")

    def __post_init__(self) -> None:
        check(
            self.kind != "model" or bool(self.name_or_path),
            "name_or_path",
            "required when reward.kind is 'model'",
        )
        if self.kind == "function":
            check(self.function is not None, "function", "required when reward.kind is 'function'")
        if self.function is not None:
            from alignment.callables import (
                load_callable,
            )  # imports the module: a typo fails here, not after training

            load_callable(self.function, key="function", arguments=("prompts", "completions"))
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


def _eval_prompts() -> DatasetSpec:
    return DatasetSpec(name="toy-prompts", split="eval")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvaluationConfig:
    """Policy (the trained model, or `template` around it) against a reference policy, judged by a reward."""

    enabled: bool = param(True, help="Run the gold evaluation after training.")
    prompts: DatasetSpec = param(help="Evaluation prompts.", factory=_eval_prompts)
    num_prompts: int = param(256, help="Number of evaluation prompts.")
    samples_per_prompt: int = param(2, help="Completions sampled per evaluation prompt.")
    max_new_tokens: int = param(
        48, help="Maximum generated tokens per evaluation completion (KL and rewards are of the cut ones)."
    )
    temperature: float = param(
        1.0, help="Evaluation sampling temperature, > 0; the KL is that of the tempered distributions."
    )
    seed: int = param(1234, help="Evaluation sampling seed.")
    best_of_n: list[int] = param(
        help="Also evaluate best-of-n sampling for these n (e.g. [1, 4, 16]).", factory=list
    )
    reward: RewardConfig | None = param(
        None,
        help="The judge (null: the recipe's reward, gold when it has none; always gold for on-policy runs, "
        "which must not be judged by the proxy they optimised).",
    )
    reference: str | None = param(
        None,
        help="Reference model: an alias, directory or hub id (null: the initial model, model.name_or_path; "
        "for LoRA runs the policy with its adapter off).",
    )
    template: str | None = param(
        None, help="Prompt template of the evaluated policy, with {prompt} where the prompt goes."
    )
    reference_template: str | None = param(
        None, help="Prompt template of the reference policy, with {prompt} where the prompt goes."
    )
    backend: Literal["auto", "transformers", "vllm"] = param(
        "auto",
        help="Sampling backend for both policies (the KL always uses transformers log-probs); auto: vLLM where "
        "it is installed for models of 20M parameters and more, else transformers (the faster of the two).",
    )
    stop: list[str] = param(
        help="Stop strings of the evaluated policy's samples (e.g. the next query marker of a prompt template); "
        "a sample ends before the first, which its text never holds.",
        factory=list,
    )
    reference_stop: list[str] = param(
        help="Stop strings of the reference policy's samples (with a reference_template that needs them).",
        factory=list,
    )
    every_n_steps: int | None = param(
        None, help="Also evaluate every N optimizer steps during training (output_dir/eval_history.jsonl)."
    )

    def __post_init__(self) -> None:
        for name in ("num_prompts", "samples_per_prompt", "max_new_tokens"):
            check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        check(
            self.temperature > 0,
            "temperature",
            f"must be > 0, got {self.temperature}: the evaluation KL is that of the sampled distributions, "
            "which greedy decoding leaves infinite or undefined",
        )
        for i, n in enumerate(self.best_of_n):
            check(n >= 1, f"best_of_n[{i}]", f"must be >= 1, got {n}")
        check(
            self.reward is None or self.reward.kind != "none",
            "reward.kind",
            "the evaluation needs a reward that scores completions (gold, model or function), got 'none'",
        )
        for name in ("stop", "reference_stop"):
            for i, stop in enumerate(getattr(self, name)):
                check(bool(stop), f"{name}[{i}]", "must not be empty")
        for name in ("template", "reference_template"):
            problem = template_problem(getattr(self, name))
            check(problem is None, name, problem or "")
        if self.every_n_steps is not None:
            check(self.every_n_steps >= 1, "every_n_steps", f"must be >= 1, got {self.every_n_steps}")
            check(self.enabled, "every_n_steps", "needs evaluation.enabled: true")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MethodConfig:
    name: str = param(help="The alignment method (a registered name: dpo, ipo, kto, bco, d2o, ...).")
    params: Any = param(
        None, help="The method's own parameters (its <Name>Params dataclass); default: its defaults."
    )

    def __post_init__(self) -> None:
        spec = method_spec(self.name)
        if self.params is None:
            object.__setattr__(self, "params", spec.params())
        check(
            isinstance(self.params, spec.params),
            "params",
            f"expected {spec.params.__name__} for method '{self.name}', got {type(self.params).__name__}",
        )


def method_spec(name: str):
    """The registered `MethodSpec` for `name`; a RecipeError at 'name' listing the valid names otherwise."""
    from alignment.methods import METHODS

    try:
        return METHODS.get(name)
    except KeyError as err:
        raise RecipeError("name", err.args[0]) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    method: MethodConfig = param(help="Method name and its hyperparameters, e.g. {name: dpo, beta: 0.1}.")
    model: ModelConfig = param(help="Policy model, dtype, LoRA and reference policy.", factory=ModelConfig)
    data: DataConfig = param(help="Training/eval datasets and token limits.", factory=DataConfig)
    training: dict[str, Any] = param(
        help="Any transformers.TrainingArguments field (learning_rate, seed, ...) except output_dir, and "
        "max_nonfinite_steps (NaN/inf steps skipped before the run stops).",
        factory=lambda: dict(TRAINING_DEFAULTS),
    )
    sampling: SamplingConfig = param(
        help="Generation for online methods and sampled data.", factory=SamplingConfig
    )
    reward: RewardConfig = param(help="Reward used to label samples and evaluate.", factory=RewardConfig)
    evaluation: EvaluationConfig = param(help="Gold evaluation after training.", factory=EvaluationConfig)
    output_dir: str = param("runs/{method}", help="Run directory; '{method}' is replaced by the method name.")

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "output_dir", self.output_dir.format(method=self.method.name))
        except (KeyError, IndexError, ValueError):
            raise RecipeError("output_dir", "the only placeholder allowed is '{method}'") from None
        check(bool(self.output_dir), "output_dir", "must not be empty")
        spec = method_spec(self.method.name)
        if spec.kind == "in_context":
            check(
                self.data.train is None and self.data.eval is None,
                "data",
                f"method '{spec.name}' trains nothing and reads no data; its queries are evaluation.prompts "
                "(remove the data section)",
            )
            check(self.evaluation.enabled, "evaluation.enabled", f"a '{spec.name}' run only evaluates")
            check(
                self.evaluation.template is None,
                "evaluation.template",
                f"a '{spec.name}' run's template is its rendered prefix (method.prompt_file); remove this key",
            )
            check(
                self.evaluation.every_n_steps is None, "evaluation.every_n_steps", "nothing trains: remove it"
            )
            changed = sorted(k for k in self.training if self.training[k] != TRAINING_DEFAULTS.get(k))
            check(
                not changed,
                "training",
                f"method '{spec.name}' trains nothing; remove the training keys {changed}",
            )
        else:
            check(self.data.train is not None, "data.train", MISSING_TRAIN)
        if spec.kind == "iterative":
            _check_iterative_recipe(self, spec.name)
        else:
            check(not self.data.pools, "data.pools", f"only Selfie reads prompt pools, not '{spec.name}'")
        if spec.kind == "self_labelled":
            room = self.data.max_length - self.data.max_prompt_length
            check(
                self.sampling.max_new_tokens <= room,
                "sampling.max_new_tokens",
                f"self-labelled pairs keep whole samples: max_new_tokens ({self.sampling.max_new_tokens}) must "
                f"fit data.max_length - data.max_prompt_length = {room}",
            )
        if spec.kind == "reward_model":
            check(
                self.evaluation.every_n_steps is None,
                "evaluation.every_n_steps",
                "the reward model is evaluated on its held-out pairs after training, not during it",
            )
        if self.data.source is None:  # resolved, so the saved recipe says which source the run used
            object.__setattr__(self, "data", dataclasses.replace(self.data, source=spec.sources[0]))
        check(
            self.data.source in spec.sources,
            "data.source",
            f"method '{spec.name}' trains on {' or '.join(spec.sources)} data, got '{self.data.source}'",
        )
        formats = spec.formats_for(self.data.source)
        for key, ds in (("train", self.data.train), ("eval", self.data.eval)):
            if ds is not None and ds.format != "auto":
                check(
                    ds.format in formats,
                    f"data.{key}.format",
                    f"method '{spec.name}' reads {', '.join(formats)} data, got '{ds.format}'",
                )
        check(
            not (self.model.reference == "precomputed" and needs_live_reference(self)),
            "model.reference",
            f"this '{spec.name}' run reads the reference's logits (method.dnd_lambda > 0 with refinement); use "
            "'copy' or 'adapter'",
        )
        check(
            not (self.model.reference == "precomputed" and self.data.source == "on_policy"),
            "model.reference",
            f"'precomputed' needs static data; this '{spec.name}' run samples on-policy "
            "(use 'copy' or 'adapter')",
        )
        if self.data.source == "on_policy" or spec.kind in ("self_labelled", "iterative"):
            _check_training_samples(self, spec.name)


def _check_training_samples(recipe: Recipe, name: str) -> None:
    """Sampling settings a run that trains on its own samples cannot work with, named before it starts."""
    sampling = recipe.sampling
    check(
        sampling.temperature > 0,
        "sampling.temperature",
        f"0 is greedy decoding: every sample of a prompt would be the same, so this '{name}' run could form no "
        "pair and no baseline from them; set a temperature > 0 (e.g. 1.0)",
    )
    if sampling.backend == "vllm" and sampling.vllm.max_model_len is not None:
        need = recipe.data.max_prompt_length + sampling.max_new_tokens
        check(
            sampling.vllm.max_model_len >= need,
            "sampling.vllm.max_model_len",
            f"{sampling.vllm.max_model_len} cannot hold a prompt and its sample: data.max_prompt_length "
            f"({recipe.data.max_prompt_length}) + sampling.max_new_tokens ({sampling.max_new_tokens}) = {need}; "
            "raise it or leave it null",
        )


def needs_live_reference(recipe: Recipe) -> bool:
    """Whether the method's loss reads the reference's logits (Selfie's noise detector), not only log-probs."""
    objective = method_spec(recipe.method.name).objective
    return objective is not None and objective.needs_live_reference(recipe.method.params)


def _check_iterative_recipe(recipe: Recipe, name: str) -> None:
    """Selfie: pools to iterate over, one λ per iteration, full weights to hand from stage to stage."""
    params = recipe.method.params
    pools = recipe.data.pools
    check(
        bool(pools),
        "data.pools",
        f"'{name}' needs at least one prompt pool, e.g. [{{name: toy-selfie, split: pool0}}]",
    )
    check(
        not params.dnd or len(params.dnd_lambdas) >= len(pools),
        "method.dnd_lambdas",
        f"needs one λ per iteration: {len(pools)} pools, {len(params.dnd_lambdas)} values",
    )
    check(
        recipe.model.revision is None,
        "model.revision",
        f"'{name}' hands π_init to later stages by name (the judge's and the evaluation's reference), where a "
        "revision would be lost; download that revision to a directory and name the directory",
    )
    check(
        not recipe.model.lora.enabled,
        "model.lora.enabled",
        f"'{name}' starts each iteration from the previous one's full weights; LoRA iterations are not "
        "supported yet (train full weights, or run selfie_iteration recipes on merged models)",
    )


def reference_mode(recipe: Recipe) -> Literal["copy", "adapter", "precomputed"]:
    """model.reference with 'auto' resolved: adapter with LoRA, else precomputed for static data (unless the
    loss reads the reference's logits), else copy"""
    if recipe.model.reference != "auto":
        return recipe.model.reference
    if recipe.model.lora.enabled:
        return "adapter"
    return "precomputed" if recipe.data.source == "static" and not needs_live_reference(recipe) else "copy"


# ---------------------------------------------------------------------------------------------- training


def validate_training(values: Any, path: str = "training") -> dict[str, Any]:
    """Our defaults overlaid with `values`, each checked against its TrainingArguments field type."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(path, f"expected a mapping of TrainingArguments fields, got {values!r}")
    resolved = dict(TRAINING_DEFAULTS)
    if not values:
        return resolved
    types_ = training_argument_types(values) | ALIGNMENT_TRAINING_KEYS
    for key, value in values.items():
        if key == "output_dir":
            raise RecipeError(
                f"{path}.output_dir", "set the top-level 'output_dir' instead of 'training.output_dir'"
            )
        if key not in types_:
            raise RecipeError(
                f"{path}.{key}", unknown_key_message(str(key), path, [k for k in types_ if k != "output_dir"])
            )
        if key == "resume_from_checkpoint" and isinstance(value, bool):
            value = "last" if value else None  # TRL's `resume_from_checkpoint: true` = the newest checkpoint
        resolved[key] = coerce(value, types_[key], f"{path}.{key}")
    check(
        resolved["max_nonfinite_steps"] >= 0,
        f"{path}.max_nonfinite_steps",
        "must be 0 or more (0: stop at the first)",
    )
    return resolved


def to_training_arguments(recipe: Recipe, args_class: type | None = None, **extra: Any):
    """`TrainingArguments` (or the trainer's subclass `args_class`): recipe.training + output_dir + extra."""
    from transformers import TrainingArguments

    cls = args_class or TrainingArguments
    transformers_keys = {k: v for k, v in recipe.training.items() if k not in ALIGNMENT_TRAINING_KEYS}
    kwargs = {**transformers_keys, "output_dir": recipe.output_dir, **extra}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # cross-field checks inside TrainingArguments.__post_init__
        raise RecipeError("training", str(err)) from None
