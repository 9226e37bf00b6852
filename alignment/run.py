"""Run a validated recipe: pick its run kind and hand it to the lifecycle. Nothing imports this module
but the command line, so the kinds and the lifecycle never import back from here."""

from __future__ import annotations

from alignment.disk import check_writable
from alignment.distributed import launch_main_process, quiet_known_warnings
from alignment.kinds import kind_for
from alignment.lifecycle import StagedRun, execute, setup_logging
from alignment.output_dir import check_output_dir, clear_output_dir, describe_run, output_lock, run_status
from alignment.recipe.schema import Recipe


def run_recipe(recipe: Recipe, *, dry_run: bool = False, overwrite: bool = False) -> int:
    """Run `recipe` into its output_dir: refused when the directory holds another run (unless resuming, or
    `overwrite`, which deletes it first) or is in use; a staged run continues its own stages instead."""
    setup_logging()
    quiet_known_warnings()
    kind = kind_for(recipe)
    staged = isinstance(kind, StagedRun)
    if dry_run:
        held = describe_run(recipe.output_dir)
        if held and not staged:
            print(
                f"note: output_dir '{recipe.output_dir}' holds {held}; a run needs resume, another "
                "output_dir or --overwrite"
            )
        return kind.execute(dry_run=True) if staged else execute(kind, dry_run=True)
    resuming = recipe.training.get("resume_from_checkpoint") is not None
    check_writable(recipe.output_dir)
    if not staged:
        check_output_dir(recipe.output_dir, resuming=resuming, overwrite=overwrite)
    if not launch_main_process():  # the main process clears and locks for the whole launch
        return kind.execute() if staged else execute(kind)
    if overwrite:
        clear_output_dir(recipe.output_dir)
    with output_lock(recipe.output_dir), run_status(recipe.output_dir) as codes:
        codes.append(kind.execute() if staged else execute(kind))
    return codes[-1]
