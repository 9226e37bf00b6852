"""Typed recipe fields: the `param` helper, range checks, and YAML value -> typed value coercion.

Every recipe section is a frozen dataclass whose fields are declared with `param(default, help=...)`, so the
help text lives in one place (the CLI and the docs read it from the field metadata). `build_section` turns a
YAML mapping into such a dataclass: unknown keys, wrong types and out-of-range values become
`RecipeError(dotted.path, message)` before anything heavy is imported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, Literal, Union

from alignment.errors import RecipeError
from alignment.registry import closest

_MISSING = dataclasses.MISSING


def param(default: Any = _MISSING, *, help: str, factory: Any = _MISSING) -> Any:
    """A dataclass field with help text; `factory` for mutable defaults (lists, dicts, sections)."""
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def check(condition: bool, name: str, message: str) -> None:
    """Raise `RecipeError(name, message)` unless `condition`; used in `__post_init__` range checks."""
    if not condition:
        raise RecipeError(name, message)


def join_path(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def field_help(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


# ---------------------------------------------------------------------------------------------- type names


def type_name(tp: Any) -> str:
    """Human name of a type annotation, used in 'expected <type>, got <value>' messages."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arm) for arm in _union_arms(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin is list:
        args = typing.get_args(tp)
        return f"a list of {type_name(args[0])}" if args else "a list"
    if tp is dict or origin is dict:
        return "a mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """Internal: the value does not fit the annotation (carries an optional hint)."""

    def __init__(self, hint: str = ""):
        self.hint = hint


# ---------------------------------------------------------------------------------------------- coercion


def coerce(value: Any, tp: Any, path: str) -> Any:
    """`value` converted to annotation `tp`, or a RecipeError at `path` naming the expected type."""
    try:
        return _coerce(value, tp, path, strict=False)
    except _Mismatch as err:
        hint = f" {err.hint}" if err.hint else ""
        raise RecipeError(path, f"expected {type_name(tp)}, got {value!r}{hint}") from None


def _choices_error(value: Any, choices: list[str]) -> _Mismatch:
    if isinstance(value, bool):
        # YAML 1.1 reads unquoted no/yes/off/on as booleans, so `save_strategy: no` arrives as False.
        words = [c for c in choices if c in ("no", "yes", "off", "on", "true", "false")]
        example = words[0] if words else choices[0]
        return _Mismatch(f"(YAML reads unquoted no/yes/on/off as a boolean: quote the word, e.g. '{example}')")
    hint = closest(str(value), choices) if isinstance(value, str) else None
    return _Mismatch(f"(did you mean '{hint}'?)" if hint else "")


def _coerce(value: Any, tp: Any, path: str, strict: bool) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch()
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, path, strict)
    if origin is Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise _choices_error(value, [str(c) for c in choices])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if isinstance(value, enum.Enum):
            value = value.value
        if value in values:
            return value
        raise _choices_error(value, [str(v) for v in values])
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch()
    if tp is int:
        return _coerce_int(value, strict)
    if tp is float:
        return _coerce_float(value, strict)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch()
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise _Mismatch()
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [coerce(item, item_tp, f"{path}[{i}]") for i, item in enumerate(value)]
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise _Mismatch()
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict) or (isinstance(value, str) and getattr(tp, "SHORTHAND", None)):
            return build_section(tp, value, path)
        raise _Mismatch()
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch("(this field cannot be set from a recipe)")


def _coerce_int(value: Any, strict: bool) -> int:
    if isinstance(value, bool):
        raise _Mismatch()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and not strict:
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                raise _Mismatch() from None
            if number.is_integer():
                return int(number)
    raise _Mismatch()


def _coerce_float(value: Any, strict: bool) -> float:
    if isinstance(value, bool):
        raise _Mismatch()
    if isinstance(value, (int, float)):
        return value  # an int is a valid float (kept as written so YAML round trips are exact)
    if isinstance(value, str) and not strict:
        # PyYAML reads `1e-5` (no dot) as a string; accept it as the number the user meant.
        try:
            return float(value)
        except ValueError:
            raise _Mismatch() from None
    raise _Mismatch()


def _union_arms(tp: Any) -> tuple[Any, ...]:
    """Union members; in `SchedulerType | str` the enum is the real contract (TrainingArguments converts to
    it), so the free-form `str` arm is dropped and typos such as 'linaer' are caught here."""
    arms = typing.get_args(tp)
    if any(isinstance(a, type) and issubclass(a, enum.Enum) for a in arms):
        arms = tuple(a for a in arms if a is not str)
    return arms


def _coerce_union(value: Any, tp: Any, path: str, strict: bool) -> Any:
    arms = typing.get_args(tp)
    if value is None:
        if type(None) in arms:
            return None
        raise _Mismatch()
    arms = tuple(arm for arm in _union_arms(tp) if arm is not type(None))
    hints = []
    for attempt_strict in (True, False):  # exact type matches first, then string -> number conversions
        for arm in arms:
            try:
                return _coerce(value, arm, path, strict=attempt_strict)
            except _Mismatch as err:
                if err.hint:
                    hints.append(err.hint)
    raise _Mismatch(hints[0] if hints else "")


# ---------------------------------------------------------------------------------------------- sections


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's init fields (handles `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def unknown_key_message(key: str, section: str, valid: list[str]) -> str:
    hint = closest(key, valid)
    suggestion = f" (did you mean '{hint}'?)" if hint else ""
    where = f"section '{section}'" if section else "the recipe's top level"
    return f"unknown key '{key}' in {where}{suggestion}; valid keys: {', '.join(sorted(valid))}"


def build_section(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass `cls` from a YAML mapping, checking keys, types, required values and ranges."""
    if isinstance(data, cls):
        return data
    if isinstance(data, str) and getattr(cls, "SHORTHAND", None):  # `train: toy-paired` = {name: toy-paired}
        data = {cls.SHORTHAND: data}
    if not isinstance(data, dict):
        raise RecipeError(path, f"expected a mapping (section) for {cls.__name__}, got {data!r}")
    types_ = field_types(cls)
    for key in data:
        if key not in types_:
            raise RecipeError(join_path(path, str(key)), unknown_key_message(str(key), path, list(types_)))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            kwargs[f.name] = coerce(data[f.name], types_[f.name], join_path(path, f.name))
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise RecipeError(
                join_path(path, f.name), f"missing required value: {f.metadata.get('help', '')}"
            )
    try:
        return cls(**kwargs)
    except RecipeError as err:  # a range check in __post_init__ names the field relative to this section
        raise RecipeError(join_path(path, err.path), err.message) from None
