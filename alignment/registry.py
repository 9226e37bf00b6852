"""A small explicit registry: the single source of valid names for the CLI, the recipe schema and the docs.

Modules register their entries at import time (``METHODS.register("bco", spec)``). A duplicate name is a
programming error; an unknown name is a user error whose message lists the valid names and the closest one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str], *, cutoff: float = 0.5) -> str | None:
    """The choice most similar to `name`, or None when nothing is reasonably close."""
    hits = difflib.get_close_matches(name, choices, n=1, cutoff=cutoff)
    return hits[0] if hits else None


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """'unknown method 'bcoo' (did you mean 'bco'?); valid: bco, dpo, ...' — shared by every lookup."""
    hint = closest(name, choices)
    suggestion = f" (did you mean '{hint}'?)" if hint else ""
    return f"unknown {kind} '{name}'{suggestion}; valid: {', '.join(sorted(choices))}"


class Registry(Generic[T]):
    """Name -> object map with helpful lookup errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; used bare (``register("x", obj)``) or as a decorator."""

        def add(value: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = value
            return value

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The entry for `name`; a KeyError whose message names the valid choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
