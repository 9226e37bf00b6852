"""`evaluation.backend: auto`: transformers for small models or without vLLM, vLLM from 20M parameters where it is
installed, and a run's evaluation that goes on with transformers when an auto-chosen engine cannot start."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from alignment.errors import BackendError
from alignment.eval import policy as policy_module
from alignment.eval import run as run_module
from alignment.eval.policy import AUTO_VLLM_MIN_PARAMETERS, evaluation_backend, parameter_count
from alignment.recipe.load import load_recipe

VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


def test_named_backends_are_themselves(tiny_model):
    assert evaluation_backend("transformers", tiny_model) == "transformers"
    assert evaluation_backend("vllm", tiny_model) == "vllm"


def test_auto_follows_model_size_and_installation(tiny_model, monkeypatch):
    assert parameter_count(tiny_model) < AUTO_VLLM_MIN_PARAMETERS
    assert evaluation_backend("auto", tiny_model) == "transformers"
    monkeypatch.setattr(policy_module, "AUTO_VLLM_MIN_PARAMETERS", parameter_count(tiny_model))
    assert evaluation_backend("auto", tiny_model) == ("vllm" if VLLM_INSTALLED else "transformers")
    monkeypatch.setattr(policy_module.importlib.util, "find_spec", lambda name: None)
    assert evaluation_backend("auto", tiny_model) == "transformers"


def test_auto_evaluation_goes_on_with_transformers_when_vllm_cannot_start(
    tiny_model, tiny_tokenizer, tiny_model_dir, monkeypatch, caplog, write_recipe
):
    recipe = load_recipe(
        write_recipe(),
        [f"model.name_or_path={tiny_model_dir}", "evaluation.num_prompts=4", "evaluation.max_new_tokens=4"],
    )
    assert recipe.evaluation.backend == "auto"
    monkeypatch.setattr(run_module, "evaluation_backend", lambda requested, model: "vllm")
    built = []
    original = run_module.make_policy

    def make_policy(*args, backend, **kwargs):
        built.append(backend)
        if backend == "vllm":
            raise BackendError("sampling backend 'vllm' failed to start an engine (test)")
        return original(*args, backend=backend, **kwargs)

    monkeypatch.setattr(run_module, "make_policy", make_policy)
    evaluator = run_module.RecipeEvaluator(recipe, tiny_tokenizer, uses_adapter=False)
    with caplog.at_level(logging.WARNING):
        result = evaluator(tiny_model)
    assert built == ["vllm", "transformers", "transformers"]  # the policy's failed start, then both sides
    assert "evaluating with transformers instead" in caplog.text
    assert 0.0 <= result["win_rate"] <= 1.0
    # a backend the recipe names is not second-guessed
    recipe = load_recipe(write_recipe(), [f"model.name_or_path={tiny_model_dir}", "evaluation.backend=vllm"])
    with pytest.raises(BackendError):
        run_module.RecipeEvaluator(recipe, tiny_tokenizer, uses_adapter=False)(tiny_model)
