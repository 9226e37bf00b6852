"""Loading local files in every format (plain and conversational), builders, hub failures, bad files."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import datasets
import pandas as pd
import pytest

from alignment.data import loading
from alignment.data.formats import prepare_for_method
from alignment.data.loading import load_dataset_spec, row_labeller
from alignment.errors import DataError
from alignment.registry import Registry

datasets.disable_progress_bars()


def spec(name, **kwargs):
    fields = {"name": str(name), "split": "train", "subset": None, "args": {}, "num_samples": None}
    return SimpleNamespace(**{**fields, **kwargs})


def user(text):
    return [{"role": "user", "content": text}]


def bot(text):
    return [{"role": "assistant", "content": text}]


PLAIN = {
    "paired": [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)],
    "unpaired": [{"prompt": f"q{i}", "completion": f"c{i}", "label": i % 2 == 0} for i in range(4)],
    "negatives": [{"prompt": f"q{i}", "rejected": f"bad {i}"} for i in range(4)],
    "prompts": [{"prompt": f"q{i}"} for i in range(4)],
}
CONVERSATIONAL = {
    "paired": [{"prompt": user(f"q{i}"), "chosen": bot("yes"), "rejected": bot("no")} for i in range(4)],
    "unpaired": [{"prompt": user(f"q{i}"), "completion": bot("a"), "label": i < 2} for i in range(4)],
    "negatives": [{"prompt": user(f"q{i}"), "rejected": bot("no")} for i in range(4)],
    "prompts": [{"prompt": user(f"q{i}")} for i in range(4)],
}


def write(path, rows):
    """Write `rows` as the file type named by the suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".parquet":
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    return path


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    return str(err.value)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet", ".csv"])
@pytest.mark.parametrize("fmt", list(PLAIN))
def test_plain_files_load_in_every_format(tmp_path, suffix, fmt):
    path = write(tmp_path / f"{fmt}{suffix}", PLAIN[fmt])
    ds = load_dataset_spec(spec(path))
    assert ds.to_list() == PLAIN[fmt]
    assert prepare_for_method(ds, (fmt,), source=str(path)) == (ds, fmt)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])  # CSV cannot hold message lists
@pytest.mark.parametrize("fmt", list(CONVERSATIONAL))
def test_conversational_files_load_in_every_format(tmp_path, suffix, fmt):
    path = write(tmp_path / f"{fmt}{suffix}", CONVERSATIONAL[fmt])
    ds = load_dataset_spec(spec(path))
    assert ds.to_list() == CONVERSATIONAL[fmt]
    assert prepare_for_method(ds, (fmt,), source=str(path))[1] == fmt


def test_save_to_disk_directory(tmp_path):
    datasets.Dataset.from_list(PLAIN["paired"]).save_to_disk(str(tmp_path / "saved"))
    assert load_dataset_spec(spec(tmp_path / "saved")).to_list() == PLAIN["paired"]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(PLAIN["prompts"])}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert "holds several splits (train)" in message(load_dataset_spec, spec(tmp_path / "dd"))
    (tmp_path / "plain_dir").mkdir()
    assert "not one written by Dataset.save_to_disk" in message(
        load_dataset_spec, spec(tmp_path / "plain_dir")
    )


def test_missing_file_names_path_and_recipe_key(tmp_path):
    path = tmp_path / "nope.jsonl"
    msg = message(load_dataset_spec, spec(path))
    assert msg.startswith(f"data file '{path}' does not exist (set by data.train.name)")
    assert "data.eval.name" in message(load_dataset_spec, spec(path), key="data.eval")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(PLAIN["paired"][0])
    path.write_text(f'{good}\n{good}\n\n{{"prompt": "q", chosen\n{good}\n')
    msg = message(load_dataset_spec, spec(path))
    assert msg.startswith(
        f"{path}: line 4: malformed JSON (Expecting property name enclosed in double quotes)"
    )


def test_malformed_json_array_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"prompt": "a"},\n {"prompt": "b" "c": 1}\n]\n')
    assert message(load_dataset_spec, spec(path)).startswith(f"{path}: line 3: malformed JSON")


def test_mixed_label_types_in_json_are_reported_by_row(tmp_path):
    rows = [{"prompt": "q", "completion": "c", "label": True}] * 3 + [
        {"prompt": "q", "completion": "c", "label": "yes"}
    ]
    path = write(tmp_path / "mixed.jsonl", rows)
    ds = load_dataset_spec(spec(path))
    assert message(prepare_for_method, ds, ("unpaired",), source=str(path)) == (
        f"{path}: row 4: 'label' must be a bool (true/false), got str 'yes'"
    )
    # with the file's row labeller: the line a user's editor shows (a blank line does not count as a row)
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    labelled = message(prepare_for_method, ds, ("unpaired",), source="s", row_label=row_labeller(spec(path)))
    assert labelled == "s: row 4 (line 5): 'label' must be a bool (true/false), got str 'yes'"


def test_csv_label_typo_is_reported_by_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("prompt,completion,label\nq,a,true\nq,b,yes\nq,c,false\n")
    ds = load_dataset_spec(spec(path))
    assert message(prepare_for_method, ds, ("unpaired",), source="data.train", row_label=row_labeller(spec(path))) == (
        "data.train: row 2 (line 3): 'label' must be a bool (true/false), got str 'yes'"
    )


def test_missing_column_and_empty_completion_in_files(tmp_path):
    path = write(tmp_path / "nolabel.parquet", [{"prompt": "q", "completion": "c"}])
    ds = load_dataset_spec(spec(path))
    assert "missing 'label'" in message(prepare_for_method, ds, ("unpaired",), source="s", fmt="unpaired")
    rows = [{"prompt": "q", "completion": "c", "label": True}] * 5 + [
        {"prompt": "q", "completion": "", "label": True}
    ]
    path = write(tmp_path / "empty.jsonl", rows)
    ds = load_dataset_spec(spec(path))
    assert message(prepare_for_method, ds, ("unpaired",), source="s") == "s: row 6: 'completion' is empty"


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    assert "unsupported extension '.txt'" in message(load_dataset_spec, spec(path))


def test_num_samples_takes_first_rows_and_warns_when_short(tmp_path, caplog):
    path = write(tmp_path / "p.jsonl", PLAIN["prompts"])
    assert load_dataset_spec(spec(path, num_samples=2))["prompt"] == ["q0", "q1"]
    with caplog.at_level(logging.WARNING, logger="alignment.data.loading"):
        ds = load_dataset_spec(spec(path, num_samples=10))
    assert len(ds) == 4
    assert "data.train.num_samples=10 but" in caplog.text and "has only 4 rows; using all 4" in caplog.text


@pytest.fixture
def builders(monkeypatch):
    """A fresh registry, so test builders never leak into the real one."""
    registry = Registry("dataset builder")
    monkeypatch.setattr(loading, "DATASET_BUILDERS", registry)
    return registry


def test_registered_builder_gets_split_seed_and_args(builders):
    calls = []

    def build(*, split, seed, n=3):
        calls.append((split, seed, n))
        return datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(n)]})

    builders.register("toy-prompts", build)
    ds = load_dataset_spec(spec("toy-prompts", split="eval", args={"n": 5}, num_samples=4), seed=7)
    assert calls == [("eval", 7, 5)] and ds["prompt"] == ["p0", "p1", "p2", "p3"]
    assert message(load_dataset_spec, spec("toy-prompts", args={"m": 1})).startswith(
        "data.train.args does not fit dataset builder 'toy-prompts'"
    )
    assert "it takes: n" in message(load_dataset_spec, spec("toy-prompts", args={"m": 1}))


def test_hub_failure_says_what_works_offline(builders, monkeypatch):
    builders.register("toy-paired", lambda *, split, seed: None)

    def offline(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    msg = message(load_dataset_spec, spec("me/toy-paired"))
    assert msg.startswith(
        "data.train.name 'me/toy-paired' is neither a dataset builder (did you mean the builder 'toy-paired'?)"
    )
    assert "the hub could not be reached or the dataset/subset/split does not exist" in msg
    assert "ConnectionError: no route to huggingface.co" in msg
    assert (
        "use a local .json/.jsonl/.parquet/.csv file, a save_to_disk directory, or a builder (toy-paired)"
        in msg
    )


def test_builder_typo_fails_before_the_hub(builders, monkeypatch):
    builders.register("toy-paired", lambda *, split, seed: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the hub was tried"))
    assert message(load_dataset_spec, spec("toy-pared")) == (
        "data.train.name: unknown dataset builder 'toy-pared' (did you mean 'toy-paired'?); valid: toy-paired"
    )


def test_hub_id_is_passed_subset_and_split(monkeypatch):
    seen = []

    def fake(name, subset, split):
        seen.append((name, subset, split))
        return datasets.Dataset.from_dict({"prompt": ["a"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    load_dataset_spec(spec("org/prefs", subset="default", split="test"))
    assert seen == [("org/prefs", "default", "test")]


def test_mixed_plain_and_conversational_rows_in_one_column(tmp_path):
    rows = [
        {"prompt": "q0", "chosen": "a", "rejected": "b"},
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": user("q2"), "chosen": "a", "rejected": "b"},
    ]
    path = write(tmp_path / "mixed_styles.jsonl", rows)
    ds = load_dataset_spec(spec(path))
    assert message(prepare_for_method, ds, ("paired",), source="s") == (
        "s: row 3: 'prompt' is conversational but row 1 is plain; a column must be all plain text or all "
        "conversational (lists of {role, content} messages)"
    )
