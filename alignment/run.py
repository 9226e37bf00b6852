"""Run a validated recipe: pick its run kind and hand it to the lifecycle. Nothing imports this module
but the command line, so the kinds and the lifecycle never import back from here."""

from __future__ import annotations

from alignment.kinds import kind_for
from alignment.lifecycle import execute, setup_logging
from alignment.recipe.schema import Recipe


def run_recipe(recipe: Recipe, *, dry_run: bool = False) -> int:
    setup_logging()
    return execute(kind_for(recipe), dry_run=dry_run)
