"""Sampling settings that cannot work are refused before anything starts (issue 14, item 7)."""

from __future__ import annotations

import pytest

from alignment.cli import main
from alignment.errors import BackendError


@pytest.mark.parametrize(
    "recipe, overrides, message",
    [
        ("recipes/online_dpo.yaml", ["sampling.temperature=0"], "'sampling.temperature': 0 is greedy decoding"),
        ("recipes/rloo.yaml", ["sampling.temperature=0"], "'sampling.temperature': 0 is greedy decoding"),
        ("recipes/selfie.yaml", ["sampling.temperature=0"], "'sampling.temperature': 0 is greedy decoding"),
        (
            "recipes/online_dpo.yaml",
            ["sampling.backend=vllm", "sampling.vllm.max_model_len=64"],
            "'sampling.vllm.max_model_len': 64 cannot hold a prompt and its sample: data.max_prompt_length (32) "
            "+ sampling.max_new_tokens (48) = 80",
        ),
    ],
)
def test_sampling_that_cannot_work_is_a_recipe_error(capsys, forbid_model_loading, recipe, overrides, message):
    assert main([recipe, *overrides, "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_offline_recipes_do_not_care_about_sampling_temperature(capsys):
    assert main(["recipes/dpo.yaml", "sampling.temperature=0", "data.train.args.n=16", "--dry-run"]) == 0


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_a_kv_cache_of_nothing_in_the_environment_is_named(monkeypatch, value):
    import torch

    from alignment.sampling import vllm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", value)
    with pytest.raises(BackendError, match=f"VLLM_CPU_KVCACHE_SPACE='{value}' in the environment leaves vLLM no KV"):
        vllm._import_vllm(1.0)
