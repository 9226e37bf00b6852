"""Recipe YAML -> validated `Recipe`, command-line overrides, and the saved copy that comes back equal.

Everything a user can get wrong in a recipe fails here as `RecipeError(dotted.path, message)`: nothing in
this module loads a model or a dataset (validating `training:` imports only the TrainingArguments dataclass).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from alignment.errors import RecipeError
from alignment.recipe.fields import build_section, join_path, unknown_key_message
from alignment.recipe.schema import (
    MISSING_TRAIN,
    DatasetSpec,
    MethodConfig,
    Recipe,
    method_spec,
    validate_training,
)
from alignment.registry import closest

DATA_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".tsv", ".txt", ".arrow")


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read `path`, apply `key.path=value` overrides, validate every section and return the `Recipe`."""
    raw = read_raw_recipe(path)
    for override in overrides:
        apply_override(raw, override)
    return recipe_from_dict(raw)


def read_raw_recipe(path: str | Path) -> dict[str, Any]:
    """The recipe file as a plain mapping, not yet validated (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(
            "", f"recipe file '{path}' does not exist" if not path.exists() else f"'{path}' is not a file"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError("", f"cannot parse '{path}' as YAML: {err}") from None
    if raw is None:
        raise RecipeError(
            "",
            f"recipe file '{path}' is empty: a recipe needs at least `method:` and `data:` (see recipes/dpo.yaml)",
        )
    if not isinstance(raw, dict):
        raise RecipeError(
            "", f"'{path}' must hold a mapping of sections (method, model, data, ...), got {raw!r}"
        )
    return raw


def parse_override(override: str) -> tuple[list[str], Any]:
    """'training.learning_rate=1e-5' -> (['training', 'learning_rate'], '1e-5'); values parse as YAML."""
    key, sep, text = override.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise RecipeError(
            "", f"override '{override}' must look like section.key=value (e.g. method.beta=0.2)"
        )
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise RecipeError(key, f"cannot parse override value {text!r} as YAML: {err}") from None
    return keys, value


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set one `a.b.c=value` in the raw recipe mapping, creating sections as needed."""
    keys, value = parse_override(override)
    set_path(raw, keys, value)


def set_path(raw: dict[str, Any], keys: list[str], value: Any) -> None:
    """`raw[k0][k1]...[kn] = value` in a raw recipe mapping, creating sections as needed."""
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif isinstance(child, str):  # `train: toy-paired` shorthand, then `data.train.split=eval`
            child = node[key] = {DatasetSpec.SHORTHAND: child}
        elif not isinstance(child, dict):
            raise RecipeError(
                ".".join(keys[: i + 1]), f"is {child!r}, not a section; cannot set '{'.'.join(keys)}'"
            )
        node = child
    node[keys[-1]] = value


def get_path(raw: dict[str, Any], keys: list[str]) -> tuple[bool, Any]:
    """(True, value) at `keys` in a raw recipe mapping, (False, None) where a key is missing."""
    node: Any = raw
    for key in keys:
        if isinstance(node, str) and key == DatasetSpec.SHORTHAND:
            return True, node
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Validate a raw recipe mapping (as read from YAML) into a `Recipe`."""
    if not isinstance(raw, dict):
        raise RecipeError("", f"a recipe must be a mapping of sections, got {raw!r}")
    raw = dict(raw)
    valid = [f.name for f in dataclasses.fields(Recipe)]
    for key in raw:
        if key not in valid:
            raise RecipeError(str(key), unknown_key_message(str(key), "", valid))
    if raw.get("method") is None:
        raise RecipeError("method", "missing required value: the method section, e.g. method: {name: dpo}")
    raw["method"] = method_from_dict(raw["method"])
    if method_spec(raw["method"].name).kind != "in_context":
        if raw.get("data") is None:
            raise RecipeError(
                "data", "missing required value: the data section, e.g. data: {train: {name: toy-paired}}"
            )
        if isinstance(raw["data"], dict) and raw["data"].get("train") is None:
            raise RecipeError("data.train", MISSING_TRAIN)  # before the section's own checks
    if raw.get("data") is None:
        raw.pop("data", None)  # a method that reads no data: the section's defaults
    raw["training"] = validate_training(raw.get("training"))
    recipe = build_section(Recipe, raw, "")
    check_local_paths(recipe)
    return recipe


def method_from_dict(section: Any, path: str = "method") -> MethodConfig:
    """`{name: bco, beta: 0.1}` -> MethodConfig("bco", BCOParams(beta=0.1)); a bare name works too."""
    if isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, dict):
        raise RecipeError(path, f"expected a mapping such as {{name: dpo, beta: 0.1}}, got {section!r}")
    params = dict(section)
    name = params.pop("name", None)
    if name is None:
        typo = next((str(k) for k in params if closest(str(k), ["name"], cutoff=0.75)), None)
        if typo is not None:  # `namex: dpo` is a typo of the key, not a missing method
            raise RecipeError(f"{path}.{typo}", f"unknown key '{typo}' (did you mean 'name'?)")
        raise RecipeError(f"{path}.name", "missing required value: the method to run (e.g. name: dpo)")
    if not isinstance(name, str):
        raise RecipeError(f"{path}.name", f"expected str, got {name!r}")
    try:
        spec = method_spec(name)
    except RecipeError as err:
        raise RecipeError(f"{path}.name", err.message) from None
    valid = ["name"] + [f.name for f in dataclasses.fields(spec.params)]
    for key in params:
        if key not in valid:
            raise RecipeError(
                f"{path}.{key}", unknown_key_message(str(key), path, valid) + f" (method '{name}')"
            )
    return MethodConfig(name=name, params=build_section(spec.params, params, path))


def looks_like_local_path(name: str) -> bool:
    """A data file suffix, or an explicit relative/absolute/home path. `org/name` stays a hub id."""
    return name.lower().endswith(DATA_FILE_SUFFIXES) or name.startswith(("/", "./", "../", "~"))


def check_local_paths(recipe: Recipe) -> None:
    """Local data files named in the recipe must exist (builder names and hub ids resolve at data loading)."""
    specs = {
        "data.train": recipe.data.train,
        "data.eval": recipe.data.eval,
        "evaluation.prompts": recipe.evaluation.prompts,
    }
    specs.update({f"data.pools[{i}]": pool for i, pool in enumerate(recipe.data.pools)})
    for where, spec in specs.items():
        if (
            spec is not None
            and looks_like_local_path(spec.name)
            and not Path(spec.name).expanduser().exists()
        ):
            resolved = Path(spec.name).expanduser().resolve()
            raise RecipeError(
                join_path(where, "name"),
                f"local data file '{spec.name}' does not exist (looked for {resolved})",
            )


# ---------------------------------------------------------------------------------------------- output


def to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain YAML-ready data (the method's params flattened into `method:`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        if f.name == "method":
            out["method"] = {"name": value.name, **dataclasses.asdict(value.params)}
        elif dataclasses.is_dataclass(value):
            out[f.name] = dataclasses.asdict(value)
        elif isinstance(value, dict):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


#: training keys that change how a run is recorded or resumed, not what it computes
RECORD_ONLY_TRAINING_KEYS = frozenset(
    {
        "resume_from_checkpoint",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_dir",
        "logging_nan_inf_filter",
        "report_to",
        "run_name",
        "disable_tqdm",
    }
)


def comparable_recipe(recipe_dict: dict[str, Any]) -> dict[str, Any]:
    """A resolved recipe (`to_dict`, or a saved recipe.yaml read back), read through today's schema, without its
    record-only training keys and its output_dir (a run directory may be moved or collected elsewhere), as plain
    JSON data: two runs whose comparable recipes are equal compute the same thing (how Selfie and studies tell a
    finished run they can keep from one to redo)."""
    try:  # a recipe saved before a key with a default was added compares equal to today's
        recipe_dict = to_dict(recipe_from_dict(json.loads(json.dumps(recipe_dict))))
    except RecipeError:
        pass  # a key removed or renamed since: compared as saved (so it differs, and the run is redone)
    out = {k: v for k, v in recipe_dict.items() if k != "output_dir"}
    out["training"] = {
        k: v for k, v in (out.get("training") or {}).items() if k not in RECORD_ONLY_TRAINING_KEYS
    }
    return json.loads(json.dumps(out))  # tuples become lists, as they come back from YAML and JSON


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML; `load_recipe` of this text gives an equal `Recipe`."""
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, default_flow_style=False, allow_unicode=True)


def save_recipe(recipe: Recipe, output_dir: str | Path | None = None) -> Path:
    """Write `<output_dir>/recipe.yaml` (default: recipe.output_dir) and return its path."""
    directory = Path(output_dir if output_dir is not None else recipe.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "recipe.yaml"
    target.write_text(dump_recipe(recipe))
    return target
