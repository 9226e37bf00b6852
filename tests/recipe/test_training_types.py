"""TrainingArguments' field types from the cache validate exactly as the live class does, and a typo in a
training key is reported without importing transformers' trainer modules (issue 14, item 12)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainingArguments

from alignment.errors import RecipeError
from alignment.recipe import training_types
from alignment.recipe.fields import coerce, field_types, type_name
from alignment.recipe.training_types import decode, encode

REPO = Path(__file__).resolve().parents[2]
SAMPLES = (
    1,
    "1",
    2.5,
    "3e-4",
    True,
    "no",
    "steps",
    "linear",
    "cosin",
    "adamw_torch",
    None,
    ["a"],
    {"a": 1},
    "x",
)


def outcome(value, tp):
    try:
        return ("ok", coerce(value, tp, "training.k"))
    except RecipeError as err:
        return ("error", str(err))


def test_every_field_validates_the_same_from_its_cached_form():
    live = field_types(TrainingArguments)
    assert len(live) > 100
    for name, tp in live.items():
        if training_types._names_a_class(encode(tp)):  # a class of its own: naming the key loads the real one
            assert training_types.training_argument_types([name])[name] == tp
            continue
        cached = decode(encode(tp))
        assert encode(cached) == encode(tp), name
        assert type_name(cached) == type_name(tp), name
        for value in SAMPLES:
            assert outcome(value, cached) == outcome(value, tp), (name, value)


def test_a_training_key_typo_is_reported_without_importing_the_trainer(tmp_path):
    env = {**os.environ, "ALIGNMENT_CACHE": str(tmp_path)}
    probe = (
        "import sys; from alignment.cli import main; "
        "code = main(['recipes/dpo.yaml', 'training.learnin_rate=1e-5', '--dry-run']); "
        "print(code, 'transformers.training_args' in sys.modules)"
    )
    first = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert first.stdout.split() == ["2", "True"], first.stderr  # builds the cache from the class
    assert list((tmp_path / "training-arguments").glob("transformers-*.json"))
    second = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True)
    assert second.stdout.split() == ["2", "False"], second.stderr
    assert "unknown key 'learnin_rate' in section 'training' (did you mean 'learning_rate'?)" in second.stderr


@pytest.mark.parametrize("garbage", ["", "{not json", '{"learning_rate": {"nonsense": 1}}'])
def test_an_unreadable_cache_is_rebuilt_from_the_class(tmp_path, monkeypatch, garbage):
    monkeypatch.setenv("ALIGNMENT_CACHE", str(tmp_path))
    path = training_types.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text(garbage)
    for cached in (training_types._cached_codes, training_types._live_types):
        cached.cache_clear()
    try:
        types_ = training_types.training_argument_types()
    finally:
        training_types._cached_codes.cache_clear()
    assert types_ == field_types(TrainingArguments)
    assert decode(encode(types_["learning_rate"])) is float
