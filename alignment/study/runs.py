"""One planned run → its resolved recipe, its state on disk, and running it in this process.

A run is finished when its directory holds `study_run.json`, written only after the run succeeded, whose
recipe equals the run's resolved recipe now. A derived value changes the resolved recipe when the run it
reads changed, so a rerun arm also reruns the arms that read it. Stale directories (another recipe, or an
interrupted run with no checkpoint to resume) are cleared before the run starts again; an interrupted run of
the same recipe with a complete checkpoint resumes from it.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from typing import Any

import yaml

from alignment.checkpoints import complete_checkpoints
from alignment.distributed import launch_main_process
from alignment.errors import StudyError
from alignment.files import write_json_atomic
from alignment.recipe.load import comparable_recipe
from alignment.study.spec import PlannedRun, Study, fail, run_recipe_raw

MARKER = "study_run.json"
RESUME_KEY = "resume_from_checkpoint"


def read_marker(run: PlannedRun) -> dict[str, Any] | None:
    path = run.output_dir / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def derived_values(study: Study, run: PlannedRun) -> dict[str, Any]:
    """The values of `run`'s derived keys, read from the finished runs they name; a StudyError when one of
    those runs has not finished (or its file lacks the key)."""
    sources = study.sources(run)
    for source in sources.values():
        if not is_finished(study, source):
            raise StudyError(
                f"run '{run.name}' needs run '{source.name}' to have finished first (no finished "
                f"{source.output_dir / MARKER} for its current recipe); run it first, e.g. "
                f"`alignment study {study.path} --run {source.name}`"
            )
    values = {}
    for key, spec in run.arm.derived.items():
        source = sources[spec.source]
        if spec.file is None:
            values[key] = str(source.output_dir)
            continue
        path = source.output_dir / spec.file
        if not path.is_file():
            raise fail(study.path, f"arm '{run.arm.name}'.derived.{key}", f"{path} does not exist")
        node: Any = json.loads(path.read_text())
        for part in spec.key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise fail(
                    study.path, f"arm '{run.arm.name}'.derived.{key}", f"{path} has no key '{spec.key}'"
                )
            node = node[part]
        values[key] = node
    return values


def resolved_raw(study: Study, run: PlannedRun) -> dict[str, Any]:
    """The run's full recipe as plain data, derived values filled in (its sources must have finished)."""
    from alignment.recipe.load import recipe_from_dict, to_dict

    return to_dict(recipe_from_dict(run_recipe_raw(study, run, derived_values(study, run))))


def is_finished(study: Study, run: PlannedRun) -> bool:
    marker = read_marker(run)
    if marker is None:
        return False
    try:
        expected = resolved_raw(study, run)
    except StudyError:
        return False
    return comparable_recipe(marker.get("recipe") or {}) == comparable_recipe(expected)


def saved_recipe_matches(run: PlannedRun, recipe_dict: dict[str, Any]) -> bool:
    saved = run.output_dir / "recipe.yaml"
    if not saved.exists():
        return False
    try:
        return comparable_recipe(yaml.safe_load(saved.read_text()) or {}) == comparable_recipe(recipe_dict)
    except yaml.YAMLError:
        return False


def how_to_continue(run: PlannedRun, recipe_dict: dict[str, Any]) -> str | None:
    """How an interrupted run of the same recipe picks up: "continue" for a staged run (Selfie keeps its
    finished stages itself), "resume" for a training run with a complete checkpoint (the lifecycle's own
    completeness rule, `checkpoint_marker`), None when it must start again."""
    from alignment.kinds import kind_for
    from alignment.lifecycle import StagedRun
    from alignment.recipe.load import recipe_from_dict

    kind = kind_for(recipe_from_dict(recipe_dict))
    if isinstance(kind, StagedRun):
        return "continue"
    marker = getattr(kind, "checkpoint_marker", None)
    return "resume" if marker and complete_checkpoints(run.output_dir, marker) else None


def prepare_directory(run: PlannedRun, recipe_dict: dict[str, Any], *, main: bool = True) -> str:
    """Make the run's directory ready to (re)start; returns what was done. Every process of a launch decides
    the same way (so all resume, or none); only the `main` one deletes."""
    if not run.output_dir.exists():
        return "new"
    action = how_to_continue(run, recipe_dict) if saved_recipe_matches(run, recipe_dict) else None
    if action is not None:
        if main:
            (run.output_dir / MARKER).unlink(missing_ok=True)
        return action
    if main:
        shutil.rmtree(run.output_dir)
    return "cleared"


def execute_run(study: Study, run: PlannedRun, started: float | None = None) -> int:
    """Run one planned run in this process (all processes of a launch call this): skip it when finished,
    clear a stale directory (the main process; the others meet it at the process-group start, after it),
    resume an interrupted one, and record `study_run.json` with the wall time (since `started`, default now)
    when it succeeds."""
    from alignment.recipe.load import recipe_from_dict
    from alignment.run import run_recipe

    raw = resolved_raw(study, run)
    if is_finished(study, run):
        print(f"{run.name}: finished already ({run.output_dir / MARKER}), skipped")
        return 0
    action = prepare_directory(run, raw, main=launch_main_process())
    if action == "resume":
        raw = {**raw, "training": {**raw["training"], RESUME_KEY: "last"}}
    recipe = recipe_from_dict(raw)
    started = time.time() if started is None else started
    code = run_recipe(recipe)
    if code != 0 or not launch_main_process():
        return code
    write_json_atomic(
        run.output_dir / MARKER,
        {
            "run": run.name,
            "arm": run.arm.name,
            "seed": run.seed,
            "point": run.point,
            "wall_time_s": time.time() - started,
            "resumed": action in ("resume", "continue"),
            "host": socket.gethostname(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": comparable_recipe(raw),
        },
    )
    return 0


def result_of(run: PlannedRun) -> dict[str, Any]:
    """The run's eval.json (its final policy's evaluation; {} when the run evaluates nothing)."""
    path = run.output_dir / "eval.json"
    return json.loads(path.read_text()) if path.exists() else {}
