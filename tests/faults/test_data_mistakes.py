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


def test_pairs_without_a_preference_are_counted_dropped_and_refused_when_nothing_is_left(
    tmp_path, capsys, caplog
):
    same = '{"prompt": "q", "chosen": "a", "rejected": "a"}\n'
    path = tmp_path / "pairs.jsonl"
    path.write_text(ROWS + same + ROWS + same)
    assert main(["recipes/dpo.yaml", f"data.train={{name: {path}}}", "--dry-run"]) == 0
    assert (
        "data.train: dropped 2 of 4 pairs whose chosen and rejected are identical (row 2 (line 2), row 4 (line 4)): "
        "they state no preference" in caplog.text
    )
    assert "truncation: 2 rows fit" in capsys.readouterr().out  # the two with a preference go on

    path.write_text(same * 3)
    assert main(["recipes/dpo.yaml", f"data.train={{name: {path}}}", "--dry-run"]) == 2
    assert (
        "every pair (3) has chosen identical to rejected, so none states a preference"
        in capsys.readouterr().err
    )


def test_conversational_pairs_are_compared_message_by_message():
    from datasets import Dataset

    from alignment.data.formats import drop_identical_pairs

    turn = [{"role": "assistant", "content": "a"}]
    other = [{"role": "assistant", "content": "b"}]
    ds = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": "q"}], "chosen": c, "rejected": r} for c, r in
         [(turn, turn), (turn, other), (other, turn), (other, other)]]
    )  # fmt: skip
    kept = drop_identical_pairs(ds, source="pairs")
    assert [(c[0]["content"], r[0]["content"]) for c, r in zip(kept["chosen"], kept["rejected"])] == [
        ("a", "b"),
        ("b", "a"),
    ]
