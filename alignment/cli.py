"""The `alignment` command: one command runs every recipe, because the recipe names its method.

    alignment RECIPE.yaml [section.key=value ...] [--dry-run]
    alignment eval ...        (alignment.eval.cli)
    alignment generate ...    (alignment.sampling.cli)
    alignment shift ...       (alignment.analysis.cli)
    alignment study ...       (alignment.study.cli)

Also `python -m alignment ...` and `accelerate launch -m alignment ...`. Any `AlignmentError` (a recipe
typo, a missing file or column) prints `error: <message>` and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence

from alignment.errors import EXIT_INTERRUPTED, AlignmentError

SUBCOMMANDS = {
    "eval": "alignment.eval.cli",
    "generate": "alignment.sampling.cli",
    "shift": "alignment.analysis.cli",
    "study": "alignment.study.cli",
}


def _epilog() -> str:
    from alignment.methods import METHODS
    from alignment.recipe.schema import Recipe

    width = max(len(name) for name in METHODS.names())
    lines = ["methods (recipe `method.name`):"]
    lines += [f"  {name:<{width}}  {METHODS.get(name).description}" for name in METHODS.names()]
    lines += ["", "recipe sections:"]
    fields = dataclasses.fields(Recipe)
    width = max(len(f.name) for f in fields)
    lines += [f"  {f.name:<{width}}  {f.metadata['help']}" for f in fields]
    lines += [
        "",
        "subcommands:",
        "  eval ...      gold evaluation of a trained run (alignment eval --help)",
        "  generate ...  sample completions from a model (alignment generate --help)",
        "  shift ...     token-distribution shift from a base to an aligned model (alignment shift --help)",
        "  study ...     a grid of runs from one study file, a table and plots (alignment study --help)",
        "",
        "examples:",
        "  alignment recipes/dpo.yaml method.beta=0.2 training.learning_rate=5e-6",
        "  accelerate launch -m alignment recipes/bco.yaml method.udm=true output_dir=runs/bco_udm",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignment",
        description="Align a language model with the method, data and settings named in a YAML recipe.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="path to the recipe YAML")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override recipe values: section.key=value, values parsed as YAML "
        "(method.beta=0.2, training.report_to=[tensorboard], output_dir=runs/x)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and print the resolved recipe, then stop before training",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete output_dir first when it holds another run (without it such a run is refused)",
    )
    return parser


def _run_subcommand(name: str, args: list[str]) -> int:
    module_name = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is None or not module_name.startswith(err.name):
            raise  # a dependency of the subcommand is missing: a real error, keep its traceback
        print(f"error: `alignment {name}` is not available in this installation", file=sys.stderr)
        return 2
    return int(module.main(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `alignment`, `python -m alignment`; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return _run_subcommand(argv[0], argv[1:])
        parser = build_parser()
        if not argv:
            parser.print_help(sys.stderr)
            return 2
        try:
            args = parser.parse_intermixed_args(argv)  # `--dry-run` may come anywhere among the overrides
        except SystemExit as exit_:  # --help (0) or a usage error (2): return it, as a function should
            return int(exit_.code or 0)
        from alignment.recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        from alignment.run import run_recipe

        return int(run_recipe(recipe, dry_run=args.dry_run, overwrite=args.overwrite) or 0)
    except AlignmentError as err:
        print(f"{'' if err.exit_code == EXIT_INTERRUPTED else 'error: '}{err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # outside training (data, evaluation): nothing to save, no traceback
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
