"""Every recipe shipped under recipes/ (recursively) validates, and so does every study under
recipes/studies/ (with every run's recipe); the count checks that none was skipped.

`recipes/accelerate/` holds `accelerate launch --config_file` files, which are not recipes.
"""

from __future__ import annotations

from pathlib import Path

from alignment.errors import AlignmentError
from alignment.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
NOT_RECIPES = {"accelerate", "studies"}


def shipped_recipes() -> list[Path]:
    files = sorted(ROOT.glob("recipes/**/*.yaml")) + sorted(ROOT.glob("recipes/**/*.yml"))
    return [f for f in files if not NOT_RECIPES & set(f.relative_to(ROOT / "recipes").parts[:-1])]


def test_every_shipped_recipe_validates(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name local data files relative to the repository root
    files = shipped_recipes()
    validated, errors = [], []
    for path in files:
        try:
            load_recipe(path)
            validated.append(path)
        except AlignmentError as err:
            errors.append(f"{path.relative_to(ROOT)}: {err}")
    assert errors == []
    assert len(validated) == len(files)
    if files:
        assert len(validated) > 0


def test_every_shipped_study_validates(monkeypatch):
    from alignment.study.spec import load_study

    monkeypatch.chdir(ROOT)
    studies = sorted(ROOT.glob("recipes/studies/*.yaml"))
    assert {p.name for p in studies} >= {"online_vs_offline.yaml", "methods.yaml"}
    for path in studies:
        study = load_study(path.relative_to(ROOT))
        assert study.runs and len({r.name for r in study.runs}) == len(study.runs)
