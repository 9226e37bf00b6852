"""Data files that cannot work are named with the file and the line before anything trains (issue 14,
item 9): bytes that are not UTF-8, an empty file, a CSV with only its header, builder options given to a
file, and row numbers counted as an editor counts lines."""

from __future__ import annotations

import pytest

from alignment.cli import main

ROWS = '{"prompt": "q", "chosen": "a", "rejected": "b"}\n'


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", ROWS.encode() + b'{"prompt": "\xff", "chosen": "a", "rejected": "b"}\n',
         "line 2: not UTF-8 (byte 0xff at column 13); save the file as UTF-8"),
        ("empty.jsonl", b"", "the file is empty: no records"),
        ("blank.jsonl", b"\n\n  \n", "the file is empty: no records"),
        ("head.csv", b"prompt,chosen,rejected\n", "the file has a header line but no rows"),
        ("null.jsonl", (ROWS * 2 + '{"prompt": "q", "chosen": "a", "rejected": null}\n').encode(),
         "data.train: row 3 (line 3): 'rejected' must be a string, got null"),
    ],
)  # fmt: skip
def test_a_bad_data_file_is_named_with_its_line(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["recipes/dpo.yaml", f"data.train={{name: {path}}}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_builder_args_with_a_local_file_are_refused(tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text(ROWS)
    # recipes/dpo.yaml has data.train.args {n: 1000, temperature: 1.0} for its toy builder
    assert main(["recipes/dpo.yaml", f"data.train.name={path}", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "data.train.args {'n': 1000, 'temperature': 1.0} are options of a dataset builder" in err
    assert f"remove data.train.args (e.g. data.train={{name: {path}}}" in err


def test_a_builder_typo_is_named_before_its_args_are_questioned(capsys):
    assert main(["recipes/dpo.yaml", "data.train.name=toy-pared", "--dry-run"]) == 2
    assert "unknown dataset builder 'toy-pared' (did you mean 'toy-paired'?)" in capsys.readouterr().err
