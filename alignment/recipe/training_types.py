"""The field types of `transformers.TrainingArguments`, without importing it every time.

Importing `TrainingArguments` pulls in torch, peft and most of transformers (about 5 s here), and the recipe's
`training:` section needs its field names and types to validate: a typo in a training key took that long to
be reported. The types are written once, as JSON, to the user cache (`$ALIGNMENT_CACHE`, default
`~/.cache/alignment`), keyed by the installed transformers version, and read back from there: a typo is then
reported in the time it takes to start Python. The JSON keeps what `alignment.recipe.fields.coerce` looks at
(unions, literals, enum values, list and dict item types, names for messages), so validation from the cache
and from the live class agree (tested).
"""

from __future__ import annotations

import enum
import functools
import json
import types
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Union

from alignment.files import user_cache_dir, write_json_atomic
from alignment.recipe.fields import field_types

FORMAT = 1  # bump when the encoding below changes
_SCALARS = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def cache_file() -> Path:
    return (
        user_cache_dir()
        / "training-arguments"
        / f"transformers-{metadata.version('transformers')}-v{FORMAT}.json"
    )


def training_argument_types(keys: typing.Iterable[str] = ()) -> dict[str, Any]:
    """TrainingArguments field name -> annotation: from the cache when it matches the installed transformers,
    else from the class itself (then cached). Fields typed by a class of their own (accelerate's
    `ParallelismConfig`, built from a mapping) need the real class: naming one in `keys` loads it."""
    codes = _cached_codes()
    if codes is None or any(_names_a_class(codes.get(key)) for key in keys):
        return _live_types()
    return {name: decode(code) for name, code in codes.items()}


@functools.cache
def _cached_codes() -> dict[str, Any] | None:
    try:
        codes = json.loads(cache_file().read_text())
        for code in codes.values():
            decode(code)  # a damaged file is rebuilt, not trusted
        return codes
    except (OSError, ValueError, KeyError, TypeError):
        return None


@functools.cache
def _live_types() -> dict[str, Any]:
    from transformers import TrainingArguments

    live = field_types(TrainingArguments)
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {name: encode(tp) for name, tp in live.items()})
    except OSError:
        pass  # a read-only home: validate from the class every time, as before
    return live


def _names_a_class(code: Any) -> bool:
    if isinstance(code, list):
        return any(_names_a_class(c) for c in code)
    return isinstance(code, dict) and ("class" in code or any(_names_a_class(c) for c in code.values()))


def encode(tp: Any) -> Any:
    """A JSON form of annotation `tp` (see `decode`)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return "any"
    if tp is type(None):
        return "none"
    if origin in (Union, types.UnionType):
        return {"union": [encode(a) for a in args]}
    if origin is Literal:
        return {"literal": list(args)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": tp.__name__, "values": [m.value for m in tp]}
    if origin in (list, dict):
        return {origin.__name__: [encode(a) for a in args]}
    if isinstance(tp, type):
        return (
            tp.__name__ if tp.__name__ in _SCALARS and tp is _SCALARS[tp.__name__] else {"class": tp.__name__}
        )
    return "any"  # an annotation coerce does not inspect either


def decode(code: Any) -> Any:
    """The annotation `encode` wrote: same unions, literals, enum values and names."""
    if code == "any":
        return Any
    if code == "none":
        return type(None)
    if isinstance(code, str):
        return _SCALARS[code]
    if "union" in code:
        return Union[tuple(decode(a) for a in code["union"])]  # noqa: UP007 (a runtime tuple of arms)
    if "literal" in code:
        return Literal[tuple(code["literal"])]
    if "enum" in code:
        return enum.Enum(code["enum"], {f"V{i}": v for i, v in enumerate(code["values"])})
    if "list" in code:
        return list[tuple(decode(a) for a in code["list"])] if code["list"] else list
    if "dict" in code:
        return dict[tuple(decode(a) for a in code["dict"])] if code["dict"] else dict
    return type(code["class"], (), {})
