"""Loading: YAML + overrides -> Recipe; each mistake is a RecipeError naming the YAML path; round trip."""

from __future__ import annotations

import json

import pytest
import yaml

from alignment.errors import RecipeError
from alignment.recipe import (
    DatasetSpec,
    dump_recipe,
    load_recipe,
    parse_override,
    recipe_from_dict,
    save_recipe,
    to_dict,
)
from alignment.recipe.schema import TRAINING_DEFAULTS

FULL = """
method: {name: bco, beta: 0.2, udm: true, delta_ema_decay: 0.9}
model:
  name_or_path: toy-base
  dtype: bfloat16
  lora: {enabled: true, r: 8, target_modules: [q_proj, v_proj]}
data:
  train: {name: toy-unpaired, format: unpaired, args: {num_prompts: 64}, num_samples: 32}
  eval: toy-unpaired
  max_length: 128
  max_prompt_length: 64
training: {learning_rate: 5e-6, num_train_epochs: 2, report_to: [tensorboard], lr_scheduler_type: cosine}
sampling: {backend: vllm, n: 4, vllm: {gpu_memory_utilization: 0.5}}
reward: {kind: function, function: "alignment.toy.gold:gold_reward"}
evaluation: {num_prompts: 16, best_of_n: [1, 4]}
output_dir: runs/{method}-udm
"""


def test_minimal_recipe_gets_all_defaults(write_recipe):
    recipe = load_recipe(write_recipe())
    assert recipe.method.name == "dpo" and recipe.method.params.beta == 0.1
    assert recipe.data.train == DatasetSpec(name="toy-paired")
    assert recipe.training == TRAINING_DEFAULTS
    assert recipe.output_dir == "runs/dpo"
    assert recipe.model.name_or_path == "toy-base" and recipe.model.lora.enabled is False


def test_full_recipe_values_and_coercion(write_recipe):
    recipe = load_recipe(write_recipe(FULL))
    p = recipe.method.params
    assert (p.beta, p.udm, p.delta_ema_decay, p.delta) == (0.2, True, 0.9, "class_balanced")
    assert recipe.model.lora.target_modules == ["q_proj", "v_proj"] and recipe.model.lora.r == 8
    assert recipe.data.train.args == {"num_prompts": 64} and recipe.data.eval == DatasetSpec(
        name="toy-unpaired"
    )
    assert recipe.training["learning_rate"] == 5e-6 and isinstance(recipe.training["learning_rate"], float)
    assert recipe.training["report_to"] == ["tensorboard"] and recipe.training["seed"] == 0
    assert recipe.sampling.vllm.gpu_memory_utilization == 0.5 and recipe.sampling.vllm.enforce_eager is True
    assert recipe.evaluation.best_of_n == [1, 4]
    assert recipe.output_dir == "runs/bco-udm"


def test_overrides_change_the_resolved_recipe(write_recipe):
    recipe = load_recipe(
        write_recipe(),
        [
            "method.beta=0.5",
            "method.label_smoothing=0.1",
            "training.learning_rate=1e-5",
            "training.report_to=[tensorboard]",
            "data.train.split=eval",  # the DatasetSpec was given as a bare name in no file here, still works
            "model.lora.enabled=true",
            "output_dir=/tmp/somewhere",
            "data.eval=toy-paired",
        ],
    )
    assert (recipe.method.params.beta, recipe.method.params.label_smoothing) == (0.5, 0.1)
    assert recipe.training["learning_rate"] == 1e-5 and recipe.training["report_to"] == ["tensorboard"]
    assert recipe.data.train.split == "eval" and recipe.data.eval.name == "toy-paired"
    assert recipe.model.lora.enabled is True and recipe.output_dir == "/tmp/somewhere"


def test_override_can_switch_method_and_extend_shorthand(write_recipe):
    path = write_recipe("method: dpo\ndata: {train: toy-paired}\n")
    recipe = load_recipe(path, ["method.name=bco", "method.udm=true", "data.train.num_samples=8"])
    assert recipe.method.name == "bco" and recipe.method.params.udm is True
    assert recipe.data.train == DatasetSpec(name="toy-paired", num_samples=8)
    assert recipe.output_dir == "runs/bco"


def test_parse_override_values_are_yaml():
    assert parse_override("a.b=1e-5") == (
        ["a", "b"],
        "1e-5",
    )  # YAML 1.1 reads this as a string; coerced later
    assert parse_override("a=[x, y]") == (["a"], ["x", "y"])
    assert parse_override("a.b=true") == (["a", "b"], True)
    assert parse_override("a.b=") == (["a", "b"], None)
    with pytest.raises(RecipeError, match="override 'beta' must look like section.key=value"):
        parse_override("beta")


def test_round_trip_through_save_and_load(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(FULL), ["training.seed=3", "method.max_density_ratio=4"])
    saved = save_recipe(recipe, tmp_path / "run")
    assert saved == tmp_path / "run" / "recipe.yaml"
    again = load_recipe(saved)
    assert again == recipe
    assert dump_recipe(again) == dump_recipe(recipe)
    assert yaml.safe_load(saved.read_text()) == to_dict(recipe)


def test_round_trip_of_defaults(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe())
    assert load_recipe(save_recipe(recipe, tmp_path)) == recipe


def _error(write_recipe, text, overrides=()) -> RecipeError:
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text), list(overrides))
    return err.value


BASE = "method: {name: dpo}\ndata: {train: toy-paired}\n"


@pytest.mark.parametrize(
    "text, overrides, path, message",
    [
        (
            BASE + "modle: {}\n",
            [],
            "modle",
            "unknown key 'modle' in the recipe's top level (did you mean 'model'?); "
            "valid keys: data, evaluation, "
            "method, model, output_dir, reward, sampling, training",
        ),
        (
            BASE + "model: {lora: {rr: 4}}\n",
            [],
            "model.lora.rr",
            "unknown key 'rr' in section 'model.lora' (did you mean 'r'?); "
            "valid keys: alpha, dropout, enabled, r, "
            "target_modules",
        ),
        (
            BASE,
            ["method.betta=0.5"],
            "method.betta",
            "unknown key 'betta' in section 'method' (did you mean 'beta'?); "
            "valid keys: beta, label_smoothing, name "
            "(method 'dpo')",
        ),
        (
            BASE + "training: {learning_rate: abc}\n",
            [],
            "training.learning_rate",
            "expected float, got 'abc'",
        ),
        (
            BASE,
            ["training.per_device_train_batch_size=2.5"],
            "training.per_device_train_batch_size",
            "expected int, got 2.5",
        ),
        (BASE, ["model.lora.r=big"], "model.lora.r", "expected int, got 'big'"),
        (
            BASE,
            ["model.dtype=bf16"],
            "model.dtype",
            "expected one of 'float32', 'bfloat16', 'float16', 'auto', got 'bf16'",
        ),
        (
            BASE,
            ["training.lr_scheduler_type=cosin"],
            "training.lr_scheduler_type",
            "got 'cosin' (did you mean 'cosine'?)",
        ),
        (
            BASE,
            ["training.save_strategy=no"],
            "training.save_strategy",
            "got False (YAML reads unquoted no/yes/on/off as a boolean: quote the word, e.g. 'no')",
        ),
        (
            BASE,
            ["sampling.vllm.enforce_eager=maybe"],
            "sampling.vllm.enforce_eager",
            "expected bool, got 'maybe'",
        ),
        (BASE, ["evaluation.best_of_n=[1, x]"], "evaluation.best_of_n[1]", "expected int, got 'x'"),
        (BASE, ["method.beta=-1"], "method.beta", "must be > 0, got -1"),
        (
            BASE,
            ["data.max_prompt_length=300"],
            "data.max_prompt_length",
            "must be >= 1 and < max_length (256), got 300",
        ),
        (BASE, ["reward.kind=model"], "reward.name_or_path", "required when reward.kind is 'model'"),
        (BASE, ["reward.function=os.system('rm')"], "reward.function", "expected 'package.module:function'"),
        (
            BASE,
            ["method.name=dpoo"],
            "method.name",
            "unknown method 'dpoo' (did you mean 'dpo'?); valid: bco, ctrl, d2o, dpo, ipo, kto",
        ),
        ("data: {train: toy-paired}\n", [], "method", "missing required value: the method section"),
        (
            "method: {beta: 0.1}\ndata: {train: toy-paired}\n",
            [],
            "method.name",
            "missing required value: the method to run",
        ),
        ("method: dpo\n", [], "data", "missing required value: the data section"),
        (
            "method: dpo\ndata: {max_length: 64}\n",
            [],
            "data.train",
            "missing required value: Training dataset (required)",
        ),
        (
            BASE,
            ["training.output_dir=x"],
            "training.output_dir",
            "set the top-level 'output_dir' instead of 'training.output_dir'",
        ),
        (
            BASE,
            ["data.train.format=unpaired"],
            "data.train.format",
            "method 'dpo' reads paired data, got 'unpaired'",
        ),
        (BASE, ["output_dir=runs/{name}"], "output_dir", "the only placeholder allowed is '{method}'"),
        (BASE, ["model.reference=adapter"], "model.reference", "'adapter' needs LoRA"),
    ],
)
def test_bad_recipes_name_the_yaml_path(write_recipe, text, overrides, path, message):
    err = _error(write_recipe, text, overrides)
    assert err.path == path
    assert message in err.message
    assert str(err).startswith(f"recipe error at '{path}': ")


def test_unknown_training_key_suggests_and_lists_valid_keys(write_recipe):
    err = _error(write_recipe, BASE + "training: {leraning_rate: 1.0e-5}\n")
    assert err.path == "training.leraning_rate"
    assert err.message.startswith(
        "unknown key 'leraning_rate' in section 'training' (did you mean 'learning_rate'?)"
    )
    valid = err.message.split("valid keys: ")[1].split(", ")
    assert "per_device_train_batch_size" in valid and "output_dir" not in valid


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(tmp_path / "nope.yaml")
    assert str(err.value) == f"recipe error: recipe file '{tmp_path / 'nope.yaml'}' does not exist"


def test_missing_local_data_file(write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _error(write_recipe, "method: dpo\ndata: {train: data/pairs.jsonl}\n")
    assert err.path == "data.train.name"
    assert (
        err.message
        == f"local data file 'data/pairs.jsonl' does not exist (looked for {tmp_path / 'data/pairs.jsonl'})"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    assert (
        load_recipe(write_recipe("method: dpo\ndata: {train: data/pairs.jsonl}\n")).data.train.name
        == "data/pairs.jsonl"
    )


def test_hub_ids_are_not_mistaken_for_local_paths(write_recipe):
    recipe = load_recipe(write_recipe("method: dpo\ndata: {train: trl-lib/ultrafeedback_binarized}\n"))
    assert recipe.data.train.name == "trl-lib/ultrafeedback_binarized"


def test_yaml_that_is_not_a_mapping(write_recipe):
    err = _error(write_recipe, "- method\n- data\n")
    assert err.path == "" and "must hold a mapping of sections" in err.message


def test_recipe_from_dict_rejects_bad_section_type():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict({"method": "dpo", "data": {"train": "toy-paired"}, "model": "toy-base"})
    assert err.value.path == "model" and err.value.message == "expected a mapping (section), got 'toy-base'"


def test_comparable_recipes_ignore_record_keys_output_dir_and_defaults_added_since(write_recipe):
    from alignment.recipe.load import comparable_recipe, to_dict

    recipe = to_dict(load_recipe(write_recipe()))
    saved = json.loads(json.dumps(recipe))
    saved["output_dir"] = "moved/elsewhere"
    saved["training"]["save_steps"] = 500  # record-only
    del saved["evaluation"]["every_n_steps"]  # as saved before this key existed: today's default fills it
    assert comparable_recipe(saved) == comparable_recipe(recipe)
    saved["method"]["beta"] = 0.5  # what the run computes changed
    assert comparable_recipe(saved) != comparable_recipe(recipe)
