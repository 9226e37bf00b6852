"""The study file → a validated `Study`: every arm, every planned run and its dependencies.

A study file (YAML; paths in it are relative to the file):

    output_dir: runs/studies/online_vs_offline
    seeds: [0, 1, 2]                          # every arm runs once per seed (unless `once: true`)
    seed_keys: [training.seed, sampling.seed] # the recipe keys a seed sets (this is the default)
    overrides: {evaluation.every_n_steps: 25} # applied to every run
    arms:
      - name: proxy_rm                        # a dependency: trained once, not a row of the tables
        recipe: ../reward_model.yaml
        once: true
        report: false
      - name: online_dpo
        recipe: ../online_dpo.yaml
        grid: {method.beta: [0.03, 0.1, 0.3]} # one run per grid point (the product of every key's values)
        derived:                              # values read from finished runs of the study
          reward.name_or_path: {from: proxy_rm}              # that run's output directory
      - name: offline_dpo
        recipe: ../dpo.yaml
        grid: {method.beta: [0.03, 0.1, 0.3]}
        derived:
          data.train.args.n: {from: online_dpo, file: online_stats.json, key: pairs_total}
    reports:
      columns: [win_rate, kl, pairwise_accuracy, wall_time_s]   # study.md (default: the headline keys)
      plots: [frontier, classifier_vs_generator]

A derived value names an arm; the run it reads is that arm's run with the same seed and the same values of
the grid keys both arms have, which must be exactly one. Everything here is checked before anything runs:
an override of a key the recipe does not have, a derived value from an arm not in the study or matching no
single run, a dependency cycle, two arms with one name — each a `StudyError` naming the place (exit 2).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from alignment.errors import RecipeError, StudyError
from alignment.recipe.fields import closest
from alignment.recipe.load import get_path, parse_override, read_raw_recipe, recipe_from_dict, set_path

STUDY_KEYS = ("output_dir", "seeds", "seed_keys", "overrides", "arms", "reports")
ARM_KEYS = ("name", "recipe", "overrides", "grid", "derived", "needs", "once", "report")
DERIVED_KEYS = ("from", "file", "key")
REPORT_KEYS = ("columns", "plots")
PLOTS = ("frontier", "classifier_vs_generator")
DEFAULT_SEED_KEYS = ("training.seed", "sampling.seed")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class Derived:
    """A recipe value read from a finished run of arm `source`: its output directory (no `file`), or the
    value at dotted `key` of the JSON file `file` in it."""

    source: str
    file: str | None = None
    key: str | None = None

    def describe(self) -> str:
        return f"{self.source}/{self.file}:{self.key}" if self.file else f"{self.source} (output directory)"


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    recipe: Path
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    derived: dict[str, Derived]
    needs: tuple[str, ...]
    once: bool
    report: bool

    def dependencies(self) -> set[str]:
        return {d.source for d in self.derived.values()} | set(self.needs)


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: one object per planned run
class PlannedRun:
    """One run of the study: an arm at one grid point and one seed (None: a `once` arm)."""

    name: str
    arm: Arm
    point: dict[str, Any]
    seed: int | None
    output_dir: Path
    wave: int  # 0: needs no other run; n: needs runs of waves < n


@dataclasses.dataclass(frozen=True)
class Study:
    path: Path
    output_dir: Path
    seeds: list[int]
    seed_keys: tuple[str, ...]
    overrides: dict[str, Any]
    arms: list[Arm]
    columns: list[Any] | None
    plots: tuple[str, ...]
    cli_overrides: tuple[str, ...]  # every `key=value` of the command line (for the commands of its runs)
    run_overrides: tuple[str, ...]  # those that apply to every run's recipe
    runs: list[PlannedRun]

    def run_override_values(self) -> dict[str, Any]:
        values = {}
        for override in self.run_overrides:
            keys, value = parse_override(override)
            values[".".join(keys)] = value
        return values

    def run(self, name: str) -> PlannedRun:
        for run in self.runs:
            if run.name == name:
                return run
        hint = closest(name, [r.name for r in self.runs])
        raise StudyError(
            f"'{name}' is not a run of {self.path}"
            + (f" (did you mean '{hint}'?)" if hint else "")
            + "; `alignment study FILE --print-commands` lists them"
        )

    def sources(self, run: PlannedRun) -> dict[str, PlannedRun]:
        """The run each of `run`'s derived values (and `needs`) reads: arm name → that arm's matching run."""
        return {name: matching_run(self, run, name) for name in sorted(run.arm.dependencies())}


def fail(study_path: Path, where: str, message: str) -> StudyError:
    return StudyError(
        f"study {study_path}, {where}: {message}" if where else f"study {study_path}: {message}"
    )


def load_study(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Study:
    """Read and validate the study at `path` with command-line `overrides`: `seeds=[0]`, `output_dir=...`
    and other study keys change the study; any other `section.key=value` applies to every run's recipe."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(
            f"study file '{path}' does not exist" if not path.exists() else f"'{path}' is not a file"
        )
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise StudyError(f"cannot parse study file '{path}' as YAML: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise StudyError(f"study file '{path}' must hold a mapping with `arms:` (and output_dir, seeds, ...)")
    run_overrides = []
    for override in overrides:
        try:
            keys, value = parse_override(override)
        except RecipeError as err:
            raise StudyError(f"command line: {err.message}") from None
        if keys[0] in STUDY_KEYS:
            if len(keys) > 1 or keys[0] == "arms":
                raise StudyError(
                    f"command line: '{override}': set a study key whole (seeds=[0], output_dir=runs/x, "
                    "overrides={...}); a recipe key for every run goes as section.key=value; arms change in "
                    "the study file"
                )
            raw[keys[0]] = value
        else:
            run_overrides.append(override)
    return build_study(path, raw, tuple(overrides), tuple(run_overrides))


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a mapping with one key twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def build_study(
    path: Path, raw: dict[str, Any], cli_overrides: tuple[str, ...], run_overrides: tuple[str, ...]
) -> Study:
    unknown = [k for k in raw if k not in STUDY_KEYS]
    if unknown:
        hint = closest(str(unknown[0]), list(STUDY_KEYS))
        raise fail(
            path,
            "",
            f"unknown study key '{unknown[0]}'"
            + (f" (did you mean '{hint}'?)" if hint else "")
            + f"; valid keys: {', '.join(STUDY_KEYS)}",
        )
    base = path.parent
    output_dir = raw.get("output_dir")
    if not isinstance(output_dir, str) or not output_dir:
        raise fail(path, "output_dir", "missing: the directory that holds the study's runs and reports")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int for s in seeds):
        raise fail(path, "seeds", f"must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise fail(path, "seeds", f"{seeds} holds a seed twice")
    seed_keys = raw.get("seed_keys", list(DEFAULT_SEED_KEYS))
    if not isinstance(seed_keys, list) or not all(isinstance(k, str) and k for k in seed_keys):
        raise fail(path, "seed_keys", f"must be a list of dotted recipe keys, got {seed_keys!r}")
    overrides = flat_mapping(path, "overrides", raw.get("overrides"))
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, list) or not arms_raw:
        raise fail(path, "arms", "missing: a list of arms, each {name, recipe, overrides, grid, ...}")
    arms = [parse_arm(path, base, i, a) for i, a in enumerate(arms_raw)]
    names = [a.name for a in arms]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise fail(
                path,
                f"arms[{i}].name",
                f"two arms are named '{name}' (arms[{names.index(name)}] and "
                f"arms[{i}]); every arm needs its own name",
            )
    waves = arm_waves(path, arms)
    columns, plots = parse_reports(path, raw.get("reports"))
    runs = plan_runs(Path(output_dir), arms, seeds, waves)
    study = Study(
        path=path,
        output_dir=Path(output_dir),
        seeds=seeds,
        seed_keys=tuple(seed_keys),
        overrides=overrides,
        arms=arms,
        columns=columns,
        plots=plots,
        cli_overrides=cli_overrides,
        run_overrides=run_overrides,
        runs=runs,
    )
    for run in runs:  # every run's recipe validates, then each derived value reads one run
        run_recipe_raw(study, run, derived_values=None)
    for run in runs:
        study.sources(run)
    return study


def flat_mapping(path: Path, where: str, value: Any) -> dict[str, Any]:
    """A mapping of dotted recipe keys (`{method.beta: 0.1}`); None is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k for k in value):
        raise fail(path, where, f"must be a mapping of dotted recipe keys to values, got {value!r}")
    return dict(value)


def parse_arm(path: Path, base: Path, i: int, raw: Any) -> Arm:
    where = f"arms[{i}]"
    if not isinstance(raw, dict):
        raise fail(path, where, f"must be a mapping {{name, recipe, ...}}, got {raw!r}")
    for key in raw:
        if key not in ARM_KEYS:
            hint = closest(str(key), list(ARM_KEYS))
            raise fail(
                path,
                f"{where}.{key}",
                "unknown arm key"
                + (f" (did you mean '{hint}'?)" if hint else "")
                + f"; valid keys: {', '.join(ARM_KEYS)}",
            )
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise fail(path, f"{where}.name", f"needs a name of letters, digits, '_', '.' or '-', got {name!r}")
    where = f"arm '{name}'"
    recipe = raw.get("recipe")
    if not isinstance(recipe, str) or not recipe:
        raise fail(path, f"{where}.recipe", "missing: the base recipe file (relative to the study file)")
    recipe_path = (base / recipe) if not Path(recipe).is_absolute() else Path(recipe)
    if not recipe_path.is_file():
        raise fail(path, f"{where}.recipe", f"recipe file '{recipe_path}' does not exist")
    grid = flat_mapping(path, f"{where}.grid", raw.get("grid"))
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise fail(path, f"{where}.grid.{key}", f"must be a non-empty list of values, got {values!r}")
        if len({yaml.safe_dump(v) for v in values}) != len(values):
            raise fail(path, f"{where}.grid.{key}", f"{values} holds a value twice")
    derived = {}
    for key, spec in flat_mapping(path, f"{where}.derived", raw.get("derived")).items():
        derived[key] = parse_derived(path, f"{where}.derived.{key}", spec)
    needs = raw.get("needs", [])
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise fail(path, f"{where}.needs", f"must be a list of arm names, got {needs!r}")
    for flag in ("once", "report"):
        if not isinstance(raw.get(flag, True), bool):
            raise fail(path, f"{where}.{flag}", f"must be true or false, got {raw[flag]!r}")
    once = raw.get("once", False)
    if once and grid:
        raise fail(path, f"{where}.once", "an arm that runs once has no grid (make one arm per grid point)")
    return Arm(
        name=name,
        recipe=recipe_path,
        overrides=flat_mapping(path, f"{where}.overrides", raw.get("overrides")),
        grid=grid,
        derived=derived,
        needs=tuple(needs),
        once=once,
        report=raw.get("report", True),
    )


def parse_derived(path: Path, where: str, spec: Any) -> Derived:
    if not isinstance(spec, dict) or "from" not in spec:
        raise fail(
            path,
            where,
            "must be {from: ARM} (its output directory) or {from: ARM, file: F.json, key: K}"
            f", got {spec!r}",
        )
    for key in spec:
        if key not in DERIVED_KEYS:
            raise fail(path, f"{where}.{key}", f"unknown key; valid keys: {', '.join(DERIVED_KEYS)}")
    if ("file" in spec) != ("key" in spec):
        raise fail(
            path,
            where,
            "give both `file` and `key` (a value in a JSON file of that run), or neither "
            "(the run's output directory)",
        )
    values = [spec.get(k) for k in DERIVED_KEYS]
    if not all(v is None or (isinstance(v, str) and v) for v in values):
        raise fail(path, where, f"from, file and key must be non-empty strings, got {spec!r}")
    return Derived(source=spec["from"], file=spec.get("file"), key=spec.get("key"))


def arm_waves(path: Path, arms: list[Arm]) -> dict[str, int]:
    """Each arm's wave: 0 without dependencies, else one more than its deepest dependency. A dependency on
    an arm not in the study, or a cycle, is an error naming it."""
    by_name = {a.name: a for a in arms}
    for arm in arms:
        for source in sorted(arm.dependencies()):
            if source not in by_name:
                hint = closest(source, list(by_name))
                raise fail(
                    path,
                    f"arm '{arm.name}'",
                    f"depends on '{source}', which is not an arm of this study"
                    + (f" (did you mean '{hint}'?)" if hint else "")
                    + f"; arms: {', '.join(by_name)}",
                )
    waves: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> int:
        if name in trail:
            cycle = trail[trail.index(name) :] + [name]
            raise fail(
                path,
                f"arm '{name}'",
                "dependency cycle: "
                + " → ".join(cycle)
                + " (derived values and `needs` must point at arms that can finish first)",
            )
        if name not in waves:
            deps = by_name[name].dependencies()
            waves[name] = 1 + max((visit(d, trail + [name]) for d in deps), default=-1)
        return waves[name]

    for arm in arms:
        visit(arm.name, [])
    return waves


def parse_reports(path: Path, raw: Any) -> tuple[list[Any] | None, tuple[str, ...]]:
    if raw is None:
        return None, PLOTS
    if not isinstance(raw, dict):
        raise fail(path, "reports", f"must be a mapping {{columns: [...], plots: [...]}}, got {raw!r}")
    for key in raw:
        if key not in REPORT_KEYS:
            raise fail(path, f"reports.{key}", f"unknown key; valid keys: {', '.join(REPORT_KEYS)}")
    columns = raw.get("columns")
    if columns is not None and (not isinstance(columns, list) or not columns):
        raise fail(path, "reports.columns", f"must be a list of eval.json keys, got {columns!r}")
    for i, column in enumerate(columns or []):
        ok = isinstance(column, str) or (
            isinstance(column, dict)
            and isinstance(column.get("key"), str)
            and set(column) <= {"key", "best"}
            and column.get("best", "max") in ("max", "min", None)
        )
        if not ok:
            raise fail(
                path,
                f"reports.columns[{i}]",
                f"must be a key, or {{key: K, best: max|min|null}}, got {column!r}",
            )
    plots = raw.get("plots", list(PLOTS))
    if not isinstance(plots, list) or any(p not in PLOTS for p in plots):
        raise fail(path, "reports.plots", f"must be a list drawn from {', '.join(PLOTS)}, got {plots!r}")
    return columns, tuple(plots)


def value_tag(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def point_tag(grid_keys: list[str], point: dict[str, Any]) -> str:
    """`method.beta=0.1` → `beta0.1`; a key's last part is its label unless two grid keys share it."""
    lasts = [k.split(".")[-1] for k in grid_keys]
    labels = {
        k: (last if lasts.count(last) == 1 else k.replace(".", "_")) for k, last in zip(grid_keys, lasts)
    }
    return "-".join(f"{labels[k]}{value_tag(point[k])}" for k in grid_keys)


def plan_runs(output_dir: Path, arms: list[Arm], seeds: list[int], waves: dict[str, int]) -> list[PlannedRun]:
    """Every run, in the order a one-at-a-time study runs them: by wave, then seed, then arm, then grid point
    (so every arm's first seed finishes before any second seed starts)."""
    runs = []
    for arm_index, arm in enumerate(arms):
        keys = list(arm.grid)
        points = [dict(zip(keys, values)) for values in itertools.product(*(arm.grid[k] for k in keys))]
        for point_index, point in enumerate(points):
            for seed in [None] if arm.once else seeds:
                parts = (
                    [arm.name]
                    + ([point_tag(keys, point)] if point else [])
                    + ([f"s{seed}"] if seed is not None else [])
                )
                name = "-".join(parts)
                order = (waves[arm.name], -1 if seed is None else seeds.index(seed), arm_index, point_index)
                runs.append((order, PlannedRun(name, arm, point, seed, output_dir / name, waves[arm.name])))
    return [run for _, run in sorted(runs, key=lambda item: item[0])]


def matching_run(study: Study, run: PlannedRun, source: str) -> PlannedRun:
    """The run of arm `source` that `run` reads: same seed (unless `source` runs once) and the same value of
    every grid key the two arms share."""
    candidates = [
        r
        for r in study.runs
        if r.arm.name == source
        and (r.seed is None or r.seed == run.seed)
        and all(r.point[k] == run.point[k] for k in r.point if k in run.point)
    ]
    if len(candidates) != 1:
        other = next(a for a in study.arms if a.name == source)
        differ = [k for k in other.grid if k not in run.point]
        why = (
            f"its grid over {', '.join(differ)} is not {run.arm.name}'s: give both arms the same grid key"
            if differ
            else "it runs once per seed and this run has no seed: make both arms `once`, or neither"
        )
        raise fail(
            study.path,
            f"arm '{run.arm.name}'",
            f"run '{run.name}' depends on arm '{source}', and {len(candidates)} of its runs match ({why})",
        )
    return candidates[0]


def run_recipe_raw(study: Study, run: PlannedRun, derived_values: dict[str, Any] | None) -> dict[str, Any]:
    """The raw recipe of `run`: base recipe, study overrides, arm overrides, grid point, seed, command-line
    overrides, derived values, output_dir (later ones win), validated as a `Recipe` (an unknown key is named
    with the arm and where it was set). `derived_values` None: check the derived keys exist, values unknown."""
    arm = run.arm
    try:
        raw = read_raw_recipe(arm.recipe)
    except RecipeError as err:
        raise fail(study.path, f"arm '{arm.name}'.recipe", err.message) from None
    layers: list[tuple[str, dict[str, Any]]] = [
        ("overrides", study.overrides),
        (f"arm '{arm.name}'.overrides", arm.overrides),
        (f"arm '{arm.name}'.grid", run.point),
        ("seed_keys", {k: run.seed for k in study.seed_keys} if run.seed is not None else {}),
        ("command line", study.run_override_values()),
    ]
    origins: dict[str, str] = {}  # dotted key -> where it was last set, to name the place of a bad key
    for where, values in layers:
        for key, value in values.items():
            try:
                set_path(raw, key.split("."), value)
            except RecipeError as err:
                raise fail(study.path, f"{where}.{key}", err.message) from None
            origins[key] = where
    for key in arm.derived:
        where = f"arm '{arm.name}'.derived"
        if derived_values is not None:
            set_path(raw, key.split("."), derived_values[key])
            origins[key] = where
        else:
            check_key_exists(study, raw, f"{where}.{key}", key)
            if not get_path(raw, key.split("."))[0]:  # a stand-in, so that a key it makes required is set
                set_path(raw, key.split("."), f"<{arm.derived[key].describe()}>")
    raw["output_dir"] = str(run.output_dir)
    try:
        recipe_from_dict(copy.deepcopy(raw))
    except RecipeError as err:
        if derived_values is None and err.path in arm.derived:
            return raw  # the stand-in of a derived value is not a valid value: the real one is checked later
        origin = next(
            (
                k
                for k in reversed(list(origins))
                if err.path == k or err.path.startswith(k + ".") or k.startswith(err.path + ".")
            ),
            None,
        )
        where = f"{origins[origin]}.{origin}" if origin else f"arm '{arm.name}' (recipe {arm.recipe})"
        raise fail(
            study.path, where, f"recipe error at '{err.path}' in run '{run.name}': {err.message}"
        ) from None
    return raw


def check_key_exists(study: Study, raw: dict[str, Any], where: str, key: str) -> None:
    """A derived key must be one the recipe can hold; its value comes later (so only 'unknown key' counts)."""
    found, _ = get_path(raw, key.split("."))
    if found:
        return
    trial = copy.deepcopy(raw)
    set_path(trial, key.split("."), None)
    try:
        recipe_from_dict(trial)
    except RecipeError as err:
        if err.message.startswith("unknown key"):
            raise fail(study.path, where, f"{err.path}: {err.message}") from None
