"""Every recipe shipped under recipes/ (recursively) validates; the count checks that none was skipped.

`recipes/accelerate/` holds `accelerate launch --config_file` files, which are not recipes.
"""

from __future__ import annotations

from pathlib import Path

from alignment.errors import AlignmentError
from alignment.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
NOT_RECIPES = {"accelerate"}


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
