"""The study file: planning (names, order, waves, seeds, grids, derived-value matching), overrides, and every
mistake named with exit 2 before anything runs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alignment.cli import main
from alignment.errors import StudyError
from alignment.study.spec import load_study, matching_run, run_recipe_raw

DPO = """
method: {name: dpo, beta: 0.1}
model: {name_or_path: toy-base}
data: {train: {name: toy-paired, args: {n: 64}}}
output_dir: runs/x
"""
ONLINE = """
method: {name: online_dpo, beta: 0.1}
model: {name_or_path: toy-base}
data: {train: {name: toy-prompts, args: {n: 64}}}
reward: {kind: model, name_or_path: runs/reward_model}
output_dir: runs/y
"""
RM = """
method: {name: reward_model}
model: {name_or_path: toy-base}
data: {train: {name: toy-paired, args: {n: 64}}}
output_dir: runs/rm
"""


@pytest.fixture
def write_study(tmp_path: Path):
    """write_study(text) -> path of a study file beside dpo.yaml, online.yaml and rm.yaml."""
    for name, text in (("dpo.yaml", DPO), ("online.yaml", ONLINE), ("rm.yaml", RM)):
        (tmp_path / name).write_text(text)

    def write(text: str) -> Path:
        path = tmp_path / "study.yaml"
        path.write_text(textwrap.dedent(text).replace("OUT", str(tmp_path / "out")))
        return path

    return write


GOOD = """
output_dir: OUT
seeds: [0, 1]
arms:
  - {name: rm, recipe: rm.yaml, once: true, report: false}
  - name: online
    recipe: online.yaml
    grid: {method.beta: [0.1, 0.3], training.learning_rate: [1.0e-4]}
    derived: {reward.name_or_path: {from: rm}}
  - name: offline
    recipe: dpo.yaml
    overrides: {training.num_train_epochs: 2}
    grid: {method.beta: [0.1, 0.3]}
    derived: {data.train.args.n: {from: online, file: online_stats.json, key: pairs_total}}
"""


def test_plan_names_orders_and_waves_every_run(write_study, tmp_path):
    study = load_study(write_study(GOOD))
    names = [r.name for r in study.runs]
    # wave 0: the reward model; wave 1: online, seed-major; wave 2: offline
    assert names == [
        "rm",
        "online-beta0.1-learning_rate0.0001-s0",
        "online-beta0.3-learning_rate0.0001-s0",
        "online-beta0.1-learning_rate0.0001-s1",
        "online-beta0.3-learning_rate0.0001-s1",
        "offline-beta0.1-s0",
        "offline-beta0.3-s0",
        "offline-beta0.1-s1",
        "offline-beta0.3-s1",
    ]
    assert [r.wave for r in study.runs] == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert all(r.output_dir == tmp_path / "out" / r.name for r in study.runs)
    offline = study.run("offline-beta0.3-s1")
    # the offline run reads the online run of its own seed and β (the grid key both arms have)
    assert matching_run(study, offline, "online").name == "online-beta0.3-learning_rate0.0001-s1"
    assert study.sources(study.run("online-beta0.1-learning_rate0.0001-s0")) == {"rm": study.runs[0]}


def test_run_recipe_layers_overrides_grid_seed_derived_and_output_dir(write_study, tmp_path):
    study = load_study(write_study(GOOD), ["training.max_steps=5", "seeds=[7]"])
    assert study.seeds == [7] and study.run_overrides == ("training.max_steps=5",)
    run = study.run("offline-beta0.3-s7")
    raw = run_recipe_raw(study, run, {"data.train.args.n": 123})
    assert raw["method"]["beta"] == 0.3
    assert raw["training"] == {"num_train_epochs": 2, "seed": 7, "max_steps": 5}
    assert raw["sampling"]["seed"] == 7
    assert raw["data"]["train"]["args"]["n"] == 123 and raw["output_dir"] == str(tmp_path / "out" / run.name)
    rm = study.run("rm")  # a `once` arm keeps its recipe's seeds
    assert "seed" not in run_recipe_raw(study, rm, {}).get("training", {})


@pytest.mark.parametrize(
    "change, message",
    [
        # an arm overriding a key that does not exist
        (
            ("overrides: {training.num_train_epochs: 2}", "overrides: {method.betaa: 2}"),
            "arm 'offline'.overrides.method.betaa: recipe error at 'method.betaa'",
        ),
        (
            (
                "grid: {method.beta: [0.1, 0.3]}\n    derived: {data",
                "grid: {sampling.temprature: [1.0]}\n    derived: {data",
            ),
            "unknown key 'temprature' in section 'sampling' (did you mean 'temperature'?)",
        ),
        # a derived value naming a run that is not in the study
        (
            ("{from: rm}", "{from: reward_model}"),
            "depends on 'reward_model', which is not an arm of this study",
        ),
        # a derived value into a key the recipe cannot hold
        (("data.train.args.n: {from", "data.trian.args.n: {from"), "unknown key 'trian' in section 'data'"),
        # a dependency cycle
        (
            (
                "{name: rm, recipe: rm.yaml, once: true, report: false}",
                "{name: rm, recipe: rm.yaml, once: true, needs: [offline]}",
            ),
            "dependency cycle: rm → offline → online → rm",
        ),
        # two arms with the same name
        (("name: offline", "name: online"), "two arms are named 'online' (arms[1] and arms[2])"),
        # a key twice in one mapping (plain YAML keeps the last silently)
        (("seeds: [0, 1]", "seeds: [0, 1]\nseeds: [2]"), "duplicate key 'seeds'"),
        (("seeds: [0, 1]", "sedes: [0, 1]"), "unknown study key 'sedes' (did you mean 'seeds'?)"),
        # a derived value whose source has several matching runs
        (("grid: {method.beta: [0.1, 0.3]}\n    derived: {data", "derived: {data"), "2 of its runs match"),
        (("recipe: dpo.yaml", "recipe: missing.yaml"), "does not exist"),
    ],
)
def test_a_bad_study_is_named_and_exits_2_before_anything_runs(
    write_study, tmp_path, capsys, forbid_model_loading, change, message
):
    old, new = change
    assert old in GOOD
    path = write_study(GOOD.replace(old, new))
    with pytest.raises(StudyError) as err:
        load_study(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert main(["study", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_a_run_name_that_is_not_in_the_study_is_named(write_study, capsys):
    path = write_study(GOOD)
    assert main(["study", str(path), "--run", "offline-beta0.1-s9"]) == 2
    err = capsys.readouterr().err
    assert "'offline-beta0.1-s9' is not a run" in err and "did you mean 'offline-beta0.1-s" in err


def test_print_commands_lists_every_run_by_wave(write_study, capsys):
    path = write_study(GOOD)
    assert (
        main(
            [
                "study",
                str(path),
                "seeds=[0]",
                "--print-commands",
                "--launcher",
                "accelerate launch --num_processes 2",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    assert (
        commands[0] == f"accelerate launch --num_processes 2 -m alignment study {path} 'seeds=[0]' --run rm"
    )
    assert len(commands) == 5 and "# wave 2: 2 run(s)" in lines
    assert main(["study", str(path), "--print-commands", "--wave", "2"]) == 0
    wave = capsys.readouterr().out.splitlines()
    assert len(wave) == 4 and all(line.endswith(("-s0", "-s1")) and "--run offline" in line for line in wave)
