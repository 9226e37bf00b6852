"""Nothing changes silently (issue 14, items 9 and 11): fewer evaluation prompts than asked is said, and
`alignment eval` says which eval.json it replaces."""

from __future__ import annotations

import logging

import pytest

from alignment.cli import main
from alignment.eval.gold import note_prompt_count


def test_fewer_prompts_than_asked_is_said(caplog):
    with caplog.at_level(logging.WARNING):
        note_prompt_count(147, 256, "evaluation.num_prompts")
        note_prompt_count(300, 256, "evaluation.num_prompts")  # enough: nothing said
    assert caplog.messages == [
        "evaluation.num_prompts: 256 prompts asked for, the prompt set has 147 distinct ones: evaluating all 147"
    ]


@pytest.mark.integration
def test_alignment_eval_says_which_eval_json_it_replaces(tiny_model_dir, tmp_path, capsys):
    args = [
        "eval", str(tiny_model_dir), "--reference", str(tiny_model_dir), "--output-dir", str(tmp_path),
        "--num-prompts", "2", "--samples-per-prompt", "1", "--max-new-tokens", "4",
    ]  # fmt: skip
    assert main(args) == 0
    first = capsys.readouterr().out
    assert f"wrote {tmp_path / 'eval.json'}\n" in first and "replac" not in first
    assert main(args) == 0
    second = capsys.readouterr().out
    assert f"note: {tmp_path / 'eval.json'} (written " in second and "will be replaced" in second
    assert "(replacing the evaluation written " in second


@pytest.mark.integration
def test_report_to_tensorboard_works_out_of_the_box(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "recipes/dpo.yaml", f"model.name_or_path={tiny_model_dir}", "data.train.args.n=16", "training.max_steps=2",
        "training.per_device_train_batch_size=4", "training.logging_steps=1", "training.report_to=[tensorboard]",
        "evaluation.enabled=false", f"output_dir={out}",
    ]  # fmt: skip
    assert main(args) == 0
    assert list((out / "runs").glob("*/events.out.tfevents.*"))
