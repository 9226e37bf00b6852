"""Schema: help text on every field, defaults, range checks in Python construction, the method registry."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from alignment.errors import RecipeError
from alignment.methods import METHODS, MethodSpec
from alignment.recipe import schema
from alignment.recipe.schema import (
    DataConfig,
    DatasetSpec,
    LoraConfig,
    MethodConfig,
    ModelConfig,
    Recipe,
    RewardConfig,
    reference_mode,
    to_training_arguments,
)


def _sections() -> list[type]:
    """Every dataclass reachable from Recipe, plus every registered method's params."""
    seen: list[type] = []
    todo = [Recipe] + [METHODS.get(name).params for name in METHODS.names()]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.append(cls)
        for tp in typing.get_type_hints(cls).values():
            for arm in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(arm):
                    todo.append(arm)
    return seen


def test_every_field_has_help():
    sections = _sections()
    assert {Recipe, ModelConfig, LoraConfig, DataConfig, DatasetSpec, RewardConfig} <= set(sections)
    distinct_params = {METHODS.get(name).params for name in METHODS.names()}  # online methods reuse DPO/IPO's
    assert len(sections) >= 9 + len(distinct_params)
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in sections
        for f in dataclasses.fields(cls)
        if not str(f.metadata.get("help", "")).strip()
    ]
    assert missing == []


def test_registered_methods_and_formats():
    assert METHODS.names() == [
        "bco",
        "ctrl",
        "d2o",
        "dpo",
        "ipo",
        "kto",
        "online_dpo",
        "online_ipo",
        "reward_model",
        "rloo",
        "selfie",
        "selfie_iteration",
        "spa",
        "urial",
    ]
    formats = {name: METHODS.get(name).formats for name in METHODS.names()}
    assert formats == {
        "dpo": ("paired",),
        "ipo": ("paired",),
        "kto": ("unpaired", "paired"),
        "bco": ("unpaired", "paired"),
        "d2o": ("negatives", "paired", "unpaired"),
        "online_dpo": ("prompts", "paired", "unpaired", "negatives"),
        "online_ipo": ("prompts", "paired", "unpaired", "negatives"),
        "reward_model": ("paired",),
        "urial": (),  # reads no data
        "selfie": ("paired",),  # the seed; its pools are prompts (data.pools)
        "spa": ("paired",),
        "selfie_iteration": ("prompts", "paired", "unpaired", "negatives"),
        "rloo": ("prompts", "paired", "unpaired", "negatives"),
        "ctrl": ("prompts", "paired", "unpaired", "negatives"),
    }
    for name in METHODS.names():
        spec = METHODS.get(name)
        assert isinstance(spec, MethodSpec) and spec.name == name and spec.description
        base = name.removeprefix("online_")  # online methods take their offline twin's params
        special = {
            "reward_model": "RewardModelParams",
            "selfie": "SelfieParams",
            "spa": "SelfieParams",  # an alias
            "selfie_iteration": "SelfieIterationParams",
            "rloo": "RLOOParams",
            "ctrl": "CTRLParams",
        }
        expected = special.get(name, f"{base.upper()}Params")
        assert spec.params.__name__ == expected


def test_method_param_defaults_follow_the_papers():
    required = {"selfie_iteration"}  # names its judge's model: no default
    p = {name: METHODS.get(name).params() for name in METHODS.names() if name not in required}
    assert (p["dpo"].beta, p["dpo"].label_smoothing) == (0.1, 0.0)
    assert (p["ipo"].beta, p["ipo"].length_normalize) == (0.1, True)
    assert (p["kto"].desirable_weight, p["kto"].undesirable_weight) == (1.0, 1.0)
    assert (p["bco"].delta, p["bco"].delta_ema_decay, p["bco"].udm) == ("class_balanced", None, False)
    assert (p["bco"].min_density_ratio, p["bco"].max_density_ratio, p["bco"].udm_prompt_sample_size) == (
        0.5,
        10.0,
        1024,
    )
    assert (p["d2o"].beta, p["d2o"].alpha, p["d2o"].num_samples) == (0.1, 0.1, 11)
    s = p["selfie"]
    assert (s.beta, s.alpha, s.tau_quantile, s.tau_window, s.refinement_warmup) == (0.1, 0.1, 0.1, 50, 0.2)
    assert (s.samples_per_prompt, s.dnd, s.dnd_lambdas, s.judge_reference) == (2, True, [0.5, 0.25, 0.125], "initial")
    assert s.seed_num_train_epochs == 3 and p["spa"] == s
    c = p["ctrl"]
    assert (c.transform, c.t, c.target_n, c.reference_samples) == ("bon", None, 4, 16)


@pytest.mark.parametrize(
    "method, kwargs, field, message",
    [
        ("dpo", {"beta": 0.0}, "beta", "must be > 0, got 0.0"),
        ("dpo", {"label_smoothing": 0.5}, "label_smoothing", "must be in [0, 0.5), got 0.5"),
        ("ipo", {"beta": -1.0}, "beta", "must be > 0, got -1.0"),
        ("kto", {"undesirable_weight": 0.0}, "undesirable_weight", "must be > 0, got 0.0"),
        (
            "bco",
            {"delta_ema_decay": 1.0},
            "delta_ema_decay",
            "must be in (0, 1) or null (cumulative mean), got 1.0",
        ),
        (
            "bco",
            {"min_density_ratio": 2.0, "max_density_ratio": 1.0},
            "max_density_ratio",
            "must be > min_density_ratio (2.0), got 1.0",
        ),
        ("d2o", {"num_samples": 0}, "num_samples", "must be >= 1, got 0"),
    ],
)
def test_method_param_ranges(method, kwargs, field, message):
    with pytest.raises(RecipeError) as err:
        METHODS.get(method).params(**kwargs)
    assert (err.value.path, err.value.message) == (field, message)


def test_recipe_built_in_python_formats_output_dir_and_fills_method_defaults():
    recipe = Recipe(method=MethodConfig(name="kto"), data=DataConfig(train=DatasetSpec(name="toy-paired")))
    assert recipe.output_dir == "runs/kto"
    assert recipe.method.params == METHODS.get("kto").params()
    assert recipe.training == schema.TRAINING_DEFAULTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.output_dir = "x"  # type: ignore[misc]


def test_cross_field_checks():
    with pytest.raises(RecipeError, match="must be >= 1 and < max_length \\(64\\), got 64") as err:
        DataConfig(train=DatasetSpec(name="toy-paired"), max_length=64, max_prompt_length=64)
    assert err.value.path == "max_prompt_length"
    with pytest.raises(RecipeError, match="required when reward.kind is 'model'"):
        RewardConfig(kind="model")
    with pytest.raises(RecipeError, match="expected 'package.module:function', got 'os.system\\(1\\)'"):
        RewardConfig(kind="function", function="os.system(1)")
    assert RewardConfig(kind="function", function="alignment.toy.gold:gold_reward").function.endswith(":gold_reward")
    # resolved at validation: a missing module, and a callable that does not take (prompts, completions)
    with pytest.raises(RecipeError, match="cannot import module 'my_pkg.rewards'"):
        RewardConfig(kind="function", function="my_pkg.rewards:score")
    with pytest.raises(RecipeError, match=r"'os:system' cannot be called as system\(prompts, completions\)"):
        RewardConfig(kind="function", function="os:system")
    with pytest.raises(RecipeError, match="'adapter' needs LoRA"):
        ModelConfig(reference="adapter")


def test_reference_mode_auto():
    data = DataConfig(train=DatasetSpec(name="toy-paired"))
    plain = Recipe(method=MethodConfig(name="dpo"), data=data)
    lora = Recipe(
        method=MethodConfig(name="dpo"), data=data, model=ModelConfig(lora=LoraConfig(enabled=True))
    )
    copy = Recipe(method=MethodConfig(name="dpo"), data=data, model=ModelConfig(reference="copy"))
    assert (reference_mode(plain), reference_mode(lora), reference_mode(copy)) == (
        "precomputed",
        "adapter",
        "copy",
    )


def test_to_training_arguments_uses_recipe_values_and_output_dir(tmp_path):
    recipe = Recipe(
        method=MethodConfig(name="dpo"),
        data=DataConfig(train=DatasetSpec(name="toy-paired")),
        training={**schema.TRAINING_DEFAULTS, "learning_rate": 3e-6, "seed": 7},
        output_dir=str(tmp_path / "{method}"),
    )
    args = to_training_arguments(recipe, max_steps=5)
    assert (args.learning_rate, args.seed, args.max_steps) == (3e-6, 7, 5)
    assert args.output_dir == str(tmp_path / "dpo")
    assert args.remove_unused_columns is False and args.save_strategy == "steps" and args.save_steps == 0.1 and args.report_to == []
