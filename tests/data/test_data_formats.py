"""Format detection, validation messages and conversions, on in-memory datasets."""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset

from alignment.data.formats import convert, detect_format, prepare_for_method, validate_dataset
from alignment.errors import DataError


def user(text):
    return [{"role": "user", "content": text}]


def bot(text):
    return [{"role": "assistant", "content": text}]


PAIRED = {"prompt": ["p0", "p1", "p0"], "chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"]}
UNPAIRED = {"prompt": ["p0", "p1", "p2"], "completion": ["a", "b", "c"], "label": [True, False, False]}
CONV_PAIRED = {
    "prompt": [user("q0"), user("q1")],
    "chosen": [bot("good 0"), bot("good 1")],
    "rejected": [bot("bad 0"), bot("bad 1")],
}


def message(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        fn(*args, **kwargs)
    return str(err.value)


# ------------------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    "columns, fmt",
    [
        (["prompt", "chosen", "rejected"], "paired"),
        (["chosen", "rejected"], "paired"),
        (["prompt", "completion", "label", "id"], "unpaired"),
        (["prompt", "rejected"], "negatives"),
        (["prompt", "source"], "prompts"),
    ],
)
def test_detect_format(columns, fmt):
    assert detect_format(columns) == fmt


def test_detect_format_names_the_missing_column():
    msg = message(detect_format, ["prompt", "completion"], source="data.train")
    assert msg == (
        "data.train: the columns (prompt, completion) look like unpaired data but column 'label' is missing; "
        "unpaired (prompt, completion, label) are needed"
    )
    assert "column 'rejected' is missing" in message(detect_format, ["prompt", "chosen"])


def test_detect_format_lists_every_format_when_nothing_fits():
    msg = message(detect_format, ["question", "answer"])
    assert "(question, answer)" in msg
    assert "paired (prompt, chosen, rejected), unpaired (prompt, completion, label), negatives" in msg


# ----------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "fmt, data",
    [
        ("paired", PAIRED),
        ("unpaired", UNPAIRED),
        ("negatives", {"prompt": ["p"], "rejected": ["r"]}),
        ("prompts", {"prompt": ["p", ""]}),  # an empty plain prompt is allowed (unconditional generation)
        ("paired", CONV_PAIRED),
        ("unpaired", {"prompt": [user("q")], "completion": [bot("a")], "label": [False]}),
        ("negatives", {"prompt": [user("q")], "rejected": [bot("a")]}),
        ("prompts", {"prompt": [user("q"), [{"role": "system", "content": "s"}, *user("q")]]}),
    ],
)
def test_valid_data_passes(fmt, data):
    validate_dataset(Dataset.from_dict(data), fmt, source="t")


def test_missing_column():
    ds = Dataset.from_dict({"prompt": ["p"], "completion": ["c"]})
    assert message(validate_dataset, ds, "unpaired", source="data.train") == (
        "data.train: unpaired data needs columns prompt, completion, label; missing 'label' "
        "(columns present: prompt, completion)"
    )


def test_empty_completion_and_null_label_are_reported_by_row():
    ds = Dataset.from_dict(
        {"prompt": list("abcdef"), "completion": ["x", "y", "z", "w", "v", " \n"], "label": [True] * 6}
    )
    assert (
        message(validate_dataset, ds, "unpaired", source="f.jsonl") == "f.jsonl: row 6: 'completion' is empty"
    )
    ds = Dataset.from_dict(
        {"prompt": list("abcd"), "completion": ["x", "", "", ""], "label": [True, False, None, True]}
    )
    assert message(validate_dataset, ds, "unpaired", source="f.jsonl") == (
        "f.jsonl: 2 problems in unpaired data:\n"
        "  row 2: 'completion' is empty (and 2 more rows like it)\n"
        "  row 3: 'label' must be a bool (true/false), got null"
    )


@pytest.mark.parametrize(
    "labels, want",
    [
        ([1, 0], "row 1: 'label' must be a bool (true/false), got int 1 (and 1 more row like it)"),
        (["true", "yes"], "row 2: 'label' must be a bool (true/false), got str 'yes'"),  # CSV-style strings
    ],
)
def test_label_must_be_bool(labels, want):
    ds = Dataset.from_dict({"prompt": ["a", "b"], "completion": ["x", "y"], "label": labels})
    assert message(validate_dataset, ds, "unpaired", source="s") == f"s: {want}"


def test_wrong_type_text_column():
    ds = Dataset.from_dict({"prompt": [1, 2]})
    assert message(validate_dataset, ds, "prompts", source="s") == (
        "s: row 1: 'prompt' must be a string or a list of {role, content} messages, got int 1 "
        "(and 1 more row like it)"
    )


def test_conversational_checks_use_dataset_rows_after_select():
    rows = [
        {"prompt": user("q"), "chosen": bot("fine"), "rejected": bot("fine")},
        {"prompt": user("q"), "chosen": bot("fine"), "rejected": [{"role": "assistant", "content": " "}]},
        {"prompt": [{"role": "bot", "content": "q"}], "chosen": bot("fine"), "rejected": bot("fine")},
        {"prompt": user("q"), "chosen": [], "rejected": bot("fine")},
    ]
    # reversed selection: Arrow offsets no longer start at 0, row numbers must still be the dataset's
    ds = Dataset.from_list(rows).select([3, 2, 1, 0])
    assert message(validate_dataset, ds, "paired", source="s") == (
        "s: 3 problems in paired data:\n"
        "  row 1: 'chosen' is empty (no messages)\n"
        "  row 2: 'prompt' message 0 has role 'bot'; roles are system, user, assistant, tool\n"
        "  row 3: 'rejected' is empty"
    )


def test_plain_and_conversational_columns_cannot_mix():
    ds = Dataset.from_dict({"prompt": ["q"], "chosen": [bot("a")], "rejected": [bot("b")]})
    assert message(validate_dataset, ds, "paired", source="s") == (
        "s: 'prompt' is plain, 'chosen' is conversational, 'rejected' is conversational; the columns prompt, "
        "chosen, rejected must all be plain text or all conversational (lists of {role, content} messages)"
    )


def test_format_not_accepted_lists_accepted_formats_and_columns():
    ds = Dataset.from_dict({"prompt": ["q"]})
    assert message(validate_dataset, ds, "prompts", source="s", accepted=("paired", "unpaired")) == (
        "s: this method does not accept prompts data (prompt); it accepts: paired (prompt, chosen, rejected), "
        "unpaired (prompt, completion, label)"
    )


def test_empty_dataset():
    ds = Dataset.from_dict({"prompt": []})
    assert message(validate_dataset, ds, "prompts", source="s") == "s: the dataset has no rows"


# ---------------------------------------------------------------------------------------------- conversions


def test_paired_to_unpaired_doubles_rows_with_labels():
    ds = convert(Dataset.from_dict({**PAIRED, "id": [0, 1, 2]}), "paired", "unpaired")
    rows = sorted(zip(ds["id"], ds["prompt"], ds["completion"], ds["label"]))
    assert rows == [
        (0, "p0", "c0", True), (0, "p0", "r0", False),
        (1, "p1", "c1", True), (1, "p1", "r1", False),
        (2, "p0", "c2", True), (2, "p0", "r2", False),
    ]  # fmt: skip
    validate_dataset(ds, "unpaired", source="t")


def test_paired_and_unpaired_to_negatives():
    ds = convert(Dataset.from_dict(PAIRED), "paired", "negatives")
    assert ds.column_names == ["prompt", "rejected"] and ds["rejected"] == ["r0", "r1", "r2"]
    ds = convert(Dataset.from_dict(UNPAIRED), "unpaired", "negatives")
    assert ds.to_dict() == {"prompt": ["p1", "p2"], "rejected": ["b", "c"]}


def test_any_to_prompts_keeps_unique_prompts_in_order():
    assert convert(Dataset.from_dict(PAIRED), "paired", "prompts").to_dict() == {"prompt": ["p0", "p1"]}
    conv = Dataset.from_dict({"prompt": [user("a"), user("b"), user("a")], "rejected": [bot("x")] * 3})
    assert convert(conv, "negatives", "prompts")["prompt"] == [user("a"), user("b")]


def test_unsupported_conversion():
    assert message(convert, Dataset.from_dict({"prompt": ["p"]}), "prompts", "paired") == (
        "cannot convert prompts data to paired"
    )


def test_implicit_prompt_is_extracted():
    ds = Dataset.from_dict(
        {
            "chosen": [user("q0") + bot("yes"), user("q1") + bot("a") + user("more") + bot("ok")],
            "rejected": [user("q0") + bot("no"), user("q1") + bot("a") + user("more") + bot("no")],
        }
    )
    out, fmt = prepare_for_method(ds, ("paired",), source="s")
    assert fmt == "paired"
    assert out["prompt"] == [user("q0"), user("q1") + bot("a") + user("more")]
    assert out["chosen"] == [bot("yes"), bot("ok")] and out["rejected"] == [bot("no"), bot("no")]


def test_implicit_prompt_errors():
    no_prefix = Dataset.from_dict({"chosen": [user("q") + bot("a")], "rejected": [user("r") + bot("b")]})
    msg = message(prepare_for_method, no_prefix, ("paired",), source="s")
    assert (
        msg
        == "s: row 1: chosen and rejected share no leading messages, so no prompt can be extracted; add a 'prompt' column"
    )
    plain = Dataset.from_dict({"chosen": ["q a"], "rejected": ["q b"]})
    assert "a prompt can only be extracted from conversational chosen/rejected" in message(
        validate_dataset, plain, "paired", source="s"
    )


def test_prepare_for_method_converts_to_first_reachable_and_logs(caplog):
    ds = Dataset.from_dict(PAIRED)
    with caplog.at_level(logging.INFO, logger="alignment.data.formats"):
        out, fmt = prepare_for_method(ds, ("unpaired", "paired"), source="data.train")
    assert fmt == "unpaired" and len(out) == 6
    assert "data.train: converted paired data (3 rows) to unpaired (6 rows)" in caplog.text
    out, fmt = prepare_for_method(ds, ("prompts",), source="data.train")
    assert fmt == "prompts" and len(out) == 2
    out, fmt = prepare_for_method(ds, ("paired", "unpaired"), source="data.train")
    assert fmt == "paired" and out is ds


def test_prepare_for_method_unreachable_format():
    ds = Dataset.from_dict({"prompt": ["q"]})
    assert message(prepare_for_method, ds, ("paired", "unpaired"), source="data.train") == (
        "data.train: the dataset is prompts data (prompt), which this method cannot use or convert; it accepts: "
        "paired (prompt, chosen, rejected), unpaired (prompt, completion, label)"
    )


def test_prepare_for_method_with_declared_format_validates_it():
    ds = Dataset.from_dict({"prompt": ["q"], "completion": ["a"]})  # detection alone would refuse this
    out, fmt = prepare_for_method(ds, ("prompts",), source="s", fmt="prompts")
    assert fmt == "prompts" and out["prompt"] == ["q"]
    assert "missing 'label'" in message(prepare_for_method, ds, ("unpaired",), source="s", fmt="unpaired")


def test_message_checks_on_a_sliced_arrow_array():
    """Arrow arrays can be slices whose offsets do not start at 0; positions must stay row-relative."""
    import pyarrow as pa

    from alignment.data.formats import _check_messages, _Problems

    rows = [user("a") + bot("b"), user("c"), [*user("d"), {"role": "robot", "content": "e"}]]
    problems = _Problems()
    _check_messages(pa.array(rows).slice(1), "prompt", problems)
    assert [(row, text) for row, text, _ in problems.items] == [
        (1, "'prompt' message 1 has role 'robot'; roles are system, user, assistant, tool")
    ]
