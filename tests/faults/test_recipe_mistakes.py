"""Recipe mistakes named before anything loads (issue 14, item 10): a typo of `name`, an empty file, and
TRL's `resume_from_checkpoint: true`."""

from __future__ import annotations

import pytest

from alignment.cli import main
from alignment.errors import RecipeError
from alignment.recipe import load_recipe


def test_a_typo_of_method_name_is_an_unknown_key_not_a_missing_method(write_recipe, capsys, forbid_model_loading):
    path = write_recipe("method: {namex: dpo}\ndata: {train: toy-paired}\n")
    with pytest.raises(RecipeError, match=r"unknown key 'namex' \(did you mean 'name'\?\)") as err:
        load_recipe(path)
    assert err.value.path == "method.namex"
    assert main([str(path)]) == 2 and "method.namex" in capsys.readouterr().err
    # a method section without a name and without anything like it still says what is missing
    with pytest.raises(RecipeError, match="missing required value: the method to run"):
        load_recipe(write_recipe("method: {beta: 0.1}\ndata: {train: toy-paired}\n"))


def test_an_empty_recipe_file_says_it_is_empty(write_recipe):
    for text in ("", "# only a comment\n"):
        with pytest.raises(RecipeError, match="is empty: a recipe needs at least `method:` and `data:`"):
            load_recipe(write_recipe(text))


@pytest.mark.parametrize("value, expected", [("true", "last"), ("last", "last"), ("false", None)])
def test_resume_from_checkpoint_true_means_the_newest_checkpoint(write_recipe, value, expected):
    recipe = load_recipe(write_recipe(), [f"training.resume_from_checkpoint={value}"])
    assert recipe.training.get("resume_from_checkpoint") == expected
