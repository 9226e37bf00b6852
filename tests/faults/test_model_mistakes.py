"""Model folders that cannot work are named with their recipe key before any tokenizer or weights load
(issue 14, item 6), for the policy and the reward model alike, by a run and by --dry-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alignment.cli import main


def model_copy(source: Path, target: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*drop))
    return target


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m, t: t / "nope", "model directory '{path}' does not exist"),
        (lambda m, t: model_copy(m, t / "m", drop=("tokenizer*", "chat_template*", "special_tokens*")),
         "has no tokenizer (none of tokenizer.json"),
        (lambda m, t: model_copy(m, t / "m", drop=("*.safetensors",)), "has no weights (no *.safetensors file)"),
        (lambda m, t: model_copy(m, t / "m", drop=("*.safetensors",)) and (t / "m" / "pytorch_model.bin").write_bytes(b"x")
         and t / "m", "holds only pickle weights (pytorch_model.bin)"),
        (lambda m, t: (t / "m").mkdir() or (t / "m"), "is a directory without config.json"),
    ],
)  # fmt: skip
def test_a_bad_model_folder_is_named_before_anything_loads(
    tiny_model_dir, tmp_path, capsys, forbid_model_loading, make, message, dry_run
):
    path = make(tiny_model_dir, tmp_path)
    for key in ("model.name_or_path", "reward.name_or_path"):
        model = str(tiny_model_dir) if key == "reward.name_or_path" else str(path)
        args = ["recipes/online_dpo.yaml", f"model.name_or_path={model}", f"output_dir={tmp_path / 'run'}"]
        if key == "reward.name_or_path":
            args.append(f"reward.name_or_path={path}")
        assert main(args + (["--dry-run"] if dry_run else [])) == 2
        err = capsys.readouterr().err
        assert f"error: {key}: " in err and message.format(path=path) in err
    assert not (tmp_path / "run").exists()


def test_custom_model_code_needs_trust_remote_code(tiny_model_dir, tmp_path, capsys, forbid_model_loading):
    path = model_copy(tiny_model_dir, tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="my_custom_llama", auto_map={"AutoModelForCausalLM": "modeling_custom.MyModel"})
    (path / "config.json").write_text(json.dumps(config))
    assert main(["recipes/dpo.yaml", f"model.name_or_path={path}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "needs its own model code (config.json auto_map, model_type 'my_custom_llama'" in err
    assert "set model.trust_remote_code: true only if you trust that code" in err


def test_a_name_that_is_neither_local_nor_reachable_fails_at_once(tmp_path, capsys, monkeypatch):
    """Without a reachable hub (here: an endpoint that refuses connections) the hub cache alone is asked,
    instead of half a minute of retries, and the message says both places were looked at."""
    from alignment.models import hub_reachable

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)  # no runs/ here: 'runs/reward_modell' is also a valid hub id
    assert not hub_reachable()
    repo = Path(__file__).resolve().parents[2]
    args = [str(repo / "recipes" / "online_dpo.yaml"), "reward.name_or_path=runs/reward_modell", "--dry-run"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (
        f"error: reward.name_or_path: 'runs/reward_modell' is neither a local directory (looked for "
        f"{tmp_path}/runs/reward_modell) nor in the hub cache, and the hub (127.0.0.1) cannot be reached"
    ) in err
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
