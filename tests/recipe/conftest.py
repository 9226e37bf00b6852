"""Shared fixtures for recipe tests: write a recipe YAML into a temporary directory."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MINIMAL = """
method: {name: dpo}
data: {train: {name: toy-paired}}
"""


@pytest.fixture
def write_recipe(tmp_path: Path):
    """write_recipe(text) -> path of a recipe file holding the dedented `text`."""

    def write(text: str = MINIMAL, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
