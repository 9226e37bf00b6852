"""Alignment methods: one file per method, each registering a `MethodSpec` in `METHODS` at import.

`METHODS` is the single source of method names for the recipe schema (`method.name`), the CLI's `--help`
and the docs. A method file holds its `<Name>Params` dataclass (validated from the recipe's `method:`
section), its registration, and the loss wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignment.registry import Registry

MethodKind = Literal["offline", "online", "reward_model"]


@dataclass(frozen=True)
class MethodSpec:
    """What the recipe loader, the CLI and the trainers need to know about a method."""

    name: str  # registry key = file name (methods/bco.py registers "bco")
    params: type  # its <Name>Params dataclass; the recipe's `method:` keys (other than name) fill it
    formats: tuple[str, ...]  # data formats it reads, preferred first ("paired", "unpaired", ...)
    kind: MethodKind  # offline: static dataset; online: samples during training; reward_model: trains one
    description: str  # one line, shown by `alignment --help`
    objective: type | None = None  # its Objective subclass (alignment.methods.objective); built from params


METHODS: Registry[MethodSpec] = Registry("method")


def register(spec: MethodSpec) -> MethodSpec:
    """Register `spec` under its own name (a duplicate name is an error)."""
    return METHODS.register(spec.name, spec)


# Import the method files so they register (after METHODS exists: they import it from here).
from alignment.methods import (  # noqa: E402,F401
    bco,
    d2o,
    dpo,
    ipo,
    kto,
    online_dpo,
    online_ipo,
    reward_model,
)
