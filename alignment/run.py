"""Run a validated recipe: pick its run kind and hand it to the lifecycle. Nothing imports this module
but the command line, so the kinds and the lifecycle never import back from here."""

from __future__ import annotations

from alignment.kinds import kind_for
from alignment.lifecycle import StagedRun, execute, setup_logging
from alignment.recipe.schema import Recipe


def run_recipe(recipe: Recipe, *, dry_run: bool = False) -> int:
    setup_logging()
    kind = kind_for(recipe)
    if isinstance(kind, StagedRun):
        return kind.execute(dry_run=dry_run)
    return execute(kind, dry_run=dry_run)
