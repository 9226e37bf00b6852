"""The `alignment` command: errors print one line and exit 2 before any model loads; --help lists methods."""

from __future__ import annotations

import sys
import textwrap
import types

import pytest

from alignment import cli
from alignment.methods import METHODS

GOOD = """
method: {name: dpo, beta: 0.1}
data: {train: toy-paired}
training: {learning_rate: 5.0e-6}
"""


@pytest.fixture
def no_loading(forbid_model_loading, monkeypatch):
    """Fail the test if anything loads a model or tokenizer, or starts a run; records run_recipe calls."""
    calls = []

    def fake_run_recipe(recipe, dry_run=False, overwrite=False):
        calls.append((recipe, dry_run))
        return 0

    monkeypatch.setattr("alignment.run.run_recipe", fake_run_recipe)
    return calls


@pytest.fixture
def recipe_file(tmp_path):
    def write(text: str = GOOD):
        path = tmp_path / "recipe.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


BASE = "method: {name: dpo}\ndata: {train: toy-paired}\n"


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (
            BASE + "modle: {}\n",
            [],
            "error: recipe error at 'modle': unknown key 'modle' in the recipe's top level "
            "(did you mean 'model'?)",
        ),
        (
            BASE + "model: {lora: {rr: 4}}\n",
            [],
            "error: recipe error at 'model.lora.rr': unknown key 'rr' in section 'model.lora' "
            "(did you mean 'r'?); "
            "valid keys: alpha, dropout, enabled, r, target_modules",
        ),
        (
            BASE + "training: {learning_rate: abc}\n",
            [],
            "error: recipe error at 'training.learning_rate': expected float, got 'abc'",
        ),
        (
            BASE + "method: {name: dpo, beta: -1}\n",
            [],
            "error: recipe error at 'method.beta': must be > 0, got -1",
        ),
        (BASE, ["method.beta=-1"], "error: recipe error at 'method.beta': must be > 0, got -1"),
        (
            "method: {name: dpoo}\ndata: {train: toy-paired}\n",
            [],
            "error: recipe error at 'method.name': unknown method 'dpoo' (did you mean 'dpo'?); "
            "valid: bco, ctrl, d2o, dpo, ipo, kto",
        ),
        (
            "method: dpo\ndata: {max_length: 64}\n",
            [],
            "error: recipe error at 'data.train': missing required value",
        ),
        ("method: dpo\n", [], "error: recipe error at 'data': missing required value"),
        (
            "method: dpo\ndata: {train: ./no/such/file.jsonl}\n",
            [],
            "error: recipe error at 'data.train.name': local data file './no/such/file.jsonl' does not exist",
        ),
    ],
)
def test_bad_recipe_prints_error_and_exits_2_without_loading(
    no_loading, recipe_file, capsys, text, overrides, expected
):
    code = cli.main([recipe_file(text), *overrides])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(expected)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert no_loading == []


def test_missing_recipe_file(no_loading, tmp_path, capsys):
    code = cli.main([str(tmp_path / "missing.yaml"), "--dry-run"])
    assert code == 2
    assert (
        capsys.readouterr().err
        == f"error: recipe error: recipe file '{tmp_path / 'missing.yaml'}' does not exist\n"
    )
    assert no_loading == []


def test_valid_recipe_runs_with_overrides_and_dry_run(no_loading, recipe_file, capsys):
    code = cli.main(
        [
            recipe_file(),
            "method.beta=0.3",
            "--dry-run",
            "training.report_to=[tensorboard]",
            "output_dir=runs/x",
        ]
    )
    assert code == 0
    ((recipe, dry_run),) = no_loading
    assert dry_run is True
    assert recipe.method.params.beta == 0.3 and recipe.training["report_to"] == ["tensorboard"]
    assert recipe.training["learning_rate"] == 5e-6 and recipe.output_dir == "runs/x"
    assert cli.main([recipe_file()]) == 0 and no_loading[-1][1] is False


def test_help_lists_methods_and_sections(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names():
        assert f"  {name}  " in out and METHODS.get(name).description in out
    for section in ("method", "model", "data", "training", "sampling", "reward", "evaluation", "output_dir"):
        assert f"\n  {section} " in out
    assert "--dry-run" in out


def test_no_arguments_prints_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: alignment" in capsys.readouterr().err


def test_subcommands_dispatch_to_their_modules(monkeypatch):
    seen = {}
    for name, module_name in cli.SUBCOMMANDS.items():
        module = types.ModuleType(module_name)
        module.main = lambda args, name=name: seen.setdefault(name, args) and 0
        monkeypatch.setitem(sys.modules, module_name, module)
    assert cli.main(["eval", "runs/dpo", "--num-prompts", "8"]) == 0
    assert cli.main(["generate", "toy-base"]) == 0
    assert seen == {"eval": ["runs/dpo", "--num-prompts", "8"], "generate": ["toy-base"]}


def test_missing_subcommand_module_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "eval", "alignment.no_such_package.cli")
    assert cli.main(["eval", "x"]) == 2
    assert capsys.readouterr().err == "error: `alignment eval` is not available in this installation\n"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["eval", "runs/does-not-exist/x"], "MODEL"),
        (["eval", "toy-base", "--reference", "/no/such/model"], "--reference"),
        (["generate", "./missing-model", "--n", "2"], "MODEL"),
        (["shift", "toy-base", "/no/such/aligned"], "ALIGNED"),
    ],
)
def test_commands_name_a_missing_model_before_loading_anything(forbid_model_loading, capsys, argv, named):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{named}: model directory" in err and "does not exist" in err
