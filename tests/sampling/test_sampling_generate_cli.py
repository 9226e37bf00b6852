"""`alignment generate`: best-of-n and worst-of-n selections written as JSON Lines."""

from __future__ import annotations

import json

import pytest

from alignment.cli import main


@pytest.mark.parametrize("select", ["best", "worst"])
def test_generate_selects_by_gold_reward(tmp_path, capsys, select):
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "toy-base", "--num-prompts", "6", "--n", "4", "--select", select, "--output", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert 0 <= row["index"] < 4
        if select == "best":
            assert row["reward"] >= row["mean_reward"]
        else:
            assert row["reward"] <= row["mean_reward"]
    assert f"{select}-of-4" in capsys.readouterr().out


def test_generate_rejects_a_bad_reward_before_loading(tmp_path, capsys):
    assert main(["generate", "toy-base", "--reward", "no_such_module:f", "--output", str(tmp_path / "x")]) == 2
    assert "cannot import module 'no_such_module'" in capsys.readouterr().err
