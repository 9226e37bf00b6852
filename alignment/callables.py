"""`package.module:function` references in recipes: imported (never evaluated) and checked to take the
arguments they will be called with, when the recipe is validated, so a typo or a wrong function fails before
any model loads and not at the evaluation after training. Imports nothing heavy itself."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence

from alignment.errors import RecipeError

REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def load_callable(spec: str, *, key: str, arguments: Sequence[str]) -> Callable:
    """Import `module:function` and check it can be called with the positional `arguments` (their names,
    for the message); RecipeError naming `key` when the form, module, attribute or signature is wrong."""
    if not REFERENCE.match(spec):
        raise RecipeError(key, f"expected 'package.module:function', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(key, f"cannot import module '{module_name}': {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(key, f"module '{module_name}' has no callable '{attr}'")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: nothing to check
        return fn
    try:
        signature.bind(*arguments)
    except TypeError:
        raise RecipeError(
            key,
            f"'{spec}' cannot be called as {attr}({', '.join(arguments)}): its signature is {attr}{signature}",
        ) from None
    return fn
