"""Dataset formats: column conventions (TRL's), validation with row-level messages, and conversions.

Formats, each either plain text (strings) or conversational (lists of ``{"role", "content"}`` messages):

* ``paired``    prompt / chosen / rejected. Conversational data may leave the prompt implicit: chosen and
                rejected are whole conversations sharing their leading messages, which become the prompt.
* ``unpaired``  prompt / completion / label (bool: True = desirable).
* ``negatives`` prompt / rejected (undesirable completions only, as D2O uses).
* ``prompts``   prompt (online methods sample their own completions).

Conversions, for methods that accept a format the data is not in: paired→unpaired (each pair gives a
desirable chosen row and an undesirable rejected row, as KTO/BCO do), paired→negatives, unpaired→negatives
(label False rows), and any→prompts (unique prompts). Rows are numbered from 0, as in ``ds[i]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Value

from alignment.errors import DataError

logger = logging.getLogger(__name__)

FORMATS: dict[str, tuple[str, ...]] = {
    "paired": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "negatives": ("prompt", "rejected"),
    "prompts": ("prompt",),
}
COMPLETION_COLUMNS = ("chosen", "rejected", "completion")  # must not be empty
FORMAT_COMPLETIONS: dict[str, tuple[str, ...]] = {  # each format's completion columns, in column order
    fmt: tuple(c for c in columns if c in COMPLETION_COLUMNS) for fmt, columns in FORMATS.items()
}
ROLES = ("system", "user", "assistant", "tool")
CONVERSIONS: dict[tuple[str, str], str] = {
    ("paired", "unpaired"): "each pair became a desirable chosen row and an undesirable rejected row",
    ("paired", "negatives"): "kept prompt and rejected, dropped chosen",
    ("unpaired", "negatives"): "kept the label=False rows as rejected completions",
    **{(fmt, "prompts"): "kept the unique prompts" for fmt in ("paired", "unpaired", "negatives")},
}
MAX_LISTED_PROBLEMS = 5


def describe_formats(formats: Iterable[str]) -> str:
    """'paired (prompt, chosen, rejected), prompts (prompt)' — the columns each format needs."""
    return ", ".join(f"{fmt} ({', '.join(FORMATS[fmt])})" for fmt in formats)


def detect_format(column_names: Sequence[str], *, source: str | None = None) -> str:
    """The format named by the columns; a DataError naming the missing column for near misses."""
    cols = set(column_names)
    prefix = f"{source}: " if source else ""
    near_misses = [
        ("chosen", "rejected", "paired"),
        ("completion", "label", "unpaired"),
        ("label", "completion", "unpaired"),
    ]
    if {"chosen", "rejected"} <= cols:
        return "paired"
    if {"prompt", "completion", "label"} <= cols:
        return "unpaired"
    for present, missing, fmt in near_misses:
        if present in cols and missing not in cols:
            raise DataError(
                f"{prefix}the columns ({', '.join(column_names)}) look like {fmt} data but column "
                f"'{missing}' is missing; {describe_formats([fmt])} are needed"
            )
    if {"prompt", "rejected"} <= cols:
        return "negatives"
    if "prompt" in cols:
        return "prompts"
    raise DataError(
        f"{prefix}cannot tell the dataset format from its columns ({', '.join(column_names) or 'none'}); "
        f"expected one of: {describe_formats(FORMATS)}"
    )


# ---------------------------------------------------------------------------------------------- validation


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _value_style(value: Any) -> str | None:
    """'plain' for a string, 'conversational' for a list of role/content dicts, None otherwise."""
    if isinstance(value, str):
        return "plain"
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        return "conversational"
    return None


def _python_problem(value: Any, column: str) -> str | None:
    """The problem with one value, checked in Python (the reference for the vectorised checks below)."""
    if column == "label":
        return (
            None
            if isinstance(value, bool)
            else f"'label' must be a bool (true/false), got {_describe(value)}"
        )
    style = _value_style(value)
    if style is None:
        return f"'{column}' must be a string or a list of {{role, content}} messages, got {_describe(value)}"
    if style == "conversational":
        for i, message in enumerate(value):
            if message.get("role") not in ROLES:
                return (
                    f"'{column}' message {i} has role {message.get('role')!r}; roles are {', '.join(ROLES)}"
                )
            if not isinstance(message.get("content"), str):
                return f"'{column}' message {i} must have a string 'content', got {_describe(message.get('content'))}"
    empty = not value if style == "conversational" else False
    if column in COMPLETION_COLUMNS:
        text = value if style == "plain" else "".join(m["content"] for m in value)
        empty = empty or not text.strip()
    return f"'{column}' is empty" if empty else None


def default_row_label(i: int) -> str:
    """Row i as users count: from 1 (`loading.row_labeller` adds the line of a local file)."""
    return f"row {i + 1}"


class _Problems:
    """Row-level problems gathered over all checks; raised together, first rows first."""

    def __init__(self, label: Callable[[int], str] = default_row_label) -> None:
        self.items: list[tuple[int, str, int]] = []  # (first row, message, rows affected)
        self.label = label

    def add(self, rows: np.ndarray, message: str) -> None:
        """Record `message` for the (sorted) offending `rows`; nothing when there are none."""
        if len(rows):
            self.items.append((int(rows[0]), message, len(rows)))

    def raise_if_any(self, source: str, fmt: str) -> None:
        if not self.items:
            return
        lines = []
        for row, message, count in sorted(self.items)[:MAX_LISTED_PROBLEMS]:
            more = f" (and {count - 1} more {'row' if count == 2 else 'rows'} like it)" if count > 1 else ""
            lines.append(f"{self.label(row)}: {message}{more}")
        hidden = len(self.items) - MAX_LISTED_PROBLEMS
        if hidden > 0:
            lines.append(f"... and {hidden} more problems")
        if len(lines) == 1:
            raise DataError(f"{source}: {lines[0]}")
        raise DataError(f"{source}: {len(self.items)} problems in {fmt} data:\n  " + "\n  ".join(lines))


def _python_check(values: list, column: str, problems: _Problems) -> str | None:
    """Check a column row by row (columns whose Arrow type is not the expected one); returns its style."""
    bad = [(i, p) for i, v in enumerate(values) if (p := _python_problem(v, column)) is not None]
    if column == "label" and bad and all(isinstance(v, str) for v in values):
        # a CSV column of "true"/"false" strings with one "yes" loads as strings: point at the odd one out
        odd = [(i, p) for i, p in bad if values[i].strip().lower() not in ("true", "false")]
        bad = odd or bad
    if bad:
        problems.add(np.array([i for i, _ in bad]), bad[0][1])
    styles = {s: i for i, v in reversed(list(enumerate(values))) if (s := _value_style(v)) is not None}
    if len(styles) > 1:
        first, other = sorted(styles, key=styles.get)
        problems.add(
            np.array([styles[other]]),
            f"'{column}' is {other} but {problems.label(styles[first])} is {first}; a column must be all plain text "
            "or all conversational (lists of {role, content} messages)",
        )
    return min(styles, key=styles.get) if styles else None


def _is_message_list(arrow_type: pa.DataType) -> bool:
    return (
        (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type))
        and pa.types.is_struct(arrow_type.value_type)
        and arrow_type.value_type.get_field_index("role") >= 0
    )


def _check_plain(array: pa.Array, column: str, problems: _Problems) -> None:
    problems.add(
        np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)),
        f"'{column}' must be a string, got null",
    )
    if column in COMPLETION_COLUMNS:
        stripped_length = pc.utf8_length(pc.utf8_trim_whitespace(array)).fill_null(1)
        problems.add(np.flatnonzero(stripped_length.to_numpy() == 0), f"'{column}' is empty")


def _check_messages(array: pa.Array, column: str, problems: _Problems) -> None:
    """Vectorised checks of a list<struct<role, content, ...>> column."""
    num_rows = len(array)
    problems.add(
        np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)),
        f"'{column}' must be a list of {{role, content}} messages, got null",
    )
    lengths = pc.list_value_length(array).fill_null(-1).to_numpy()
    problems.add(np.flatnonzero(lengths == 0), f"'{column}' is empty (no messages)")
    messages = array.flatten()
    parents = pc.list_parent_indices(array).to_numpy()
    offsets = array.offsets.to_numpy()
    starts = offsets[:-1] - offsets[0]  # where each row's messages begin in `messages`
    if not len(messages):
        return
    roles = messages.field("role")
    bad_role = ~pc.fill_null(pc.is_in(roles, value_set=pa.array(ROLES)), False).to_numpy(zero_copy_only=False)
    bad_role |= messages.is_null().to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(bad_role)
    if len(hits):
        k = hits[0]
        problems.add(
            np.unique(parents[hits]),
            f"'{column}' message {k - starts[parents[k]]} has role {roles[k].as_py()!r}; roles are {', '.join(ROLES)}",
        )
    has_content = messages.type.get_field_index("content") >= 0
    content_type = messages.type.field("content").type if has_content else None
    if not (has_content and (pa.types.is_string(content_type) or pa.types.is_large_string(content_type))):
        problems.add(np.arange(num_rows)[lengths > 0], f"'{column}' messages must have a string 'content'")
        return
    contents = messages.field("content")
    hits = np.flatnonzero(contents.is_null().to_numpy(zero_copy_only=False))
    if len(hits):
        k = hits[0]
        problems.add(
            np.unique(parents[hits]), f"'{column}' message {k - starts[parents[k]]} has no 'content' string"
        )
    if column in COMPLETION_COLUMNS:
        chars = pc.utf8_length(pc.utf8_trim_whitespace(contents)).fill_null(0).to_numpy()
        per_row = np.bincount(parents, weights=chars, minlength=num_rows)
        problems.add(np.flatnonzero((per_row == 0) & (lengths > 0)), f"'{column}' is empty")


def _check_column(ds: Dataset, table: pa.Table, column: str, problems: _Problems) -> str | None:
    """Validate one column; returns its style ('plain' / 'conversational') for text columns."""
    arrow_type = table.schema.field(column).type
    array = table.column(column).combine_chunks()
    if column == "label":
        if pa.types.is_boolean(arrow_type):
            rows = np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))
            problems.add(rows, "'label' must be a bool (true/false), got null")
        else:
            _python_check(list(ds["label"]), "label", problems)
        return None
    if isinstance(ds.features[column], Value) and (
        pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
    ):
        _check_plain(array, column, problems)
        return "plain"
    if _is_message_list(arrow_type):
        _check_messages(array, column, problems)
        return "conversational"
    return _python_check(list(ds[column]), column, problems)  # Json (mixed types) or a wrong type


def validate_dataset(
    ds: Dataset,
    fmt: str,
    *,
    source: str,
    accepted: tuple[str, ...] | None = None,
    row_label: Callable[[int], str] = default_row_label,
) -> None:
    """Raise DataError unless every row of `ds` is valid `fmt` data (and `fmt` is one of `accepted`).

    `source` names the dataset in messages (a recipe key or a file), `row_label` its rows. Columns are
    checked with Arrow compute over whole columns; only columns of an unexpected type (e.g. mixed JSON) are
    walked row by row.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    if accepted is not None and fmt not in accepted:
        raise DataError(
            f"{source}: this method does not accept {fmt} data ({', '.join(FORMATS[fmt])}); "
            f"it accepts: {describe_formats(accepted)}"
        )
    needed = FORMATS[fmt]
    implicit_prompt = fmt == "paired" and "prompt" not in ds.column_names
    if implicit_prompt:
        needed = ("chosen", "rejected")
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{source}: {fmt} data needs columns {', '.join(FORMATS[fmt])}; missing "
            f"{', '.join(repr(c) for c in missing)} (columns present: {', '.join(ds.column_names) or 'none'})"
        )
    if len(ds) == 0:
        raise DataError(f"{source}: the dataset has no rows")
    table = ds.select_columns(list(needed)).with_format("arrow")[:]
    problems = _Problems(row_label)
    styles = {column: _check_column(ds, table, column, problems) for column in needed}
    problems.raise_if_any(source, fmt)
    text_styles = {c: s for c, s in styles.items() if c != "label"}
    if len(set(text_styles.values())) > 1:
        described = ", ".join(f"'{c}' is {s}" for c, s in text_styles.items())
        raise DataError(
            f"{source}: {described}; the columns {', '.join(text_styles)} must all be plain text or all "
            "conversational (lists of {role, content} messages)"
        )
    if implicit_prompt and text_styles["chosen"] != "conversational":
        raise DataError(
            f"{source}: paired data without a 'prompt' column: a prompt can only be extracted from "
            "conversational chosen/rejected (message lists sharing their first messages); add a 'prompt' column"
        )


def is_conversational_dataset(ds: Dataset, fmt: str) -> bool:
    """Whether the (validated) text columns are message lists rather than strings."""
    column = "chosen" if fmt == "paired" else "prompt"
    return _is_message_list(ds.data.schema.field(column).type) or not isinstance(ds[0][column], str)


# ---------------------------------------------------------------------------------------------- conversions


def extract_implicit_prompt(
    ds: Dataset, *, source: str, row_label: Callable[[int], str] = default_row_label
) -> Dataset:
    """Split conversational chosen/rejected into prompt (their shared leading messages) + completions."""
    from trl.data_utils import extract_prompt  # lazy: trl imports transformers (seconds)

    ds = ds.map(extract_prompt, desc="Extracting prompts")  # TRL's: longest common prefix of the two
    lengths = pc.list_value_length(ds.with_format("arrow")[:]["prompt"]).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(lengths == 0)
    if len(rows):
        more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
        raise DataError(
            f"{source}: {row_label(int(rows[0]))}: chosen and rejected share no leading messages, so no prompt can be "
            f"extracted{more}; add a 'prompt' column"
        )
    return ds


def _unique_prompt_rows(ds: Dataset) -> list[int]:
    seen: set[str] = set()
    keep = []
    for i, prompt in enumerate(ds["prompt"]):
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep


def convert(ds: Dataset, from_fmt: str, to_fmt: str) -> Dataset:
    """Convert validated `from_fmt` data to `to_fmt` (see CONVERSIONS); extra columns are kept, except for
    prompts, which keeps only the unique prompts in first-seen order."""
    if from_fmt == to_fmt:
        return ds
    if (from_fmt, to_fmt) not in CONVERSIONS:
        raise DataError(f"cannot convert {from_fmt} data to {to_fmt}")
    if from_fmt == "paired" and "prompt" not in ds.column_names:
        ds = extract_implicit_prompt(ds, source="dataset")
    if to_fmt == "prompts":
        return ds.select(_unique_prompt_rows(ds)).select_columns(["prompt"]).flatten_indices()
    if (from_fmt, to_fmt) == ("paired", "unpaired"):
        from trl.data_utils import unpair_preference_dataset

        return unpair_preference_dataset(ds, desc="Unpairing")
    if (from_fmt, to_fmt) == ("paired", "negatives"):
        return ds.remove_columns("chosen")
    # unpaired -> negatives
    labels = ds.with_format("arrow")[:]["label"].to_numpy(zero_copy_only=False)
    ds = ds.select(np.flatnonzero(~labels.astype(bool))).flatten_indices()
    return ds.remove_columns("label").rename_column("completion", "rejected")


def drop_identical_pairs(
    ds: Dataset, *, source: str, row_label: Callable[[int], str] = default_row_label
) -> Dataset:
    """Paired data without its rows whose chosen and rejected are the same text (or messages), counted in a
    warning: such a pair states no preference (its DPO loss is log 2 with a zero gradient; as a KTO or D²O
    example it would call one text both good and bad). A DataError when no pair is left."""
    table = ds.select_columns(["chosen", "rejected"]).with_format("arrow")[:]
    if pa.types.is_string(table["chosen"].type) or pa.types.is_large_string(table["chosen"].type):
        same = pc.equal(table["chosen"], table["rejected"]).to_numpy(zero_copy_only=False)
    else:  # message lists: compared as Python values
        same = np.array([c == r for c, r in zip(table["chosen"].to_pylist(), table["rejected"].to_pylist())])
    rows = np.flatnonzero(same)
    if not len(rows):
        return ds
    shown = ", ".join(row_label(int(i)) for i in rows[:3]) + (
        f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    )
    if len(rows) == len(ds):
        raise DataError(
            f"{source}: every pair ({len(ds)}) has chosen identical to rejected, so none states a preference "
            f"({shown}); check how the pairs were built"
        )
    logger.warning(
        "%s: dropped %d of %d pairs whose chosen and rejected are identical (%s): they state no preference",
        source, len(rows), len(ds), shown,
    )  # fmt: skip
    return ds.select(np.flatnonzero(~same)).flatten_indices()


def prepare_for_method(
    ds: Dataset,
    accepted_formats: Sequence[str],
    *,
    source: str,
    fmt: str | None = None,
    row_label: Callable[[int], str] = default_row_label,
) -> tuple[Dataset, str]:
    """Detect (unless `fmt` is given), validate, drop pairs without a preference (`drop_identical_pairs`),
    and convert to the first accepted format reachable.

    `accepted_formats` is in the method's order of preference: the data's own format counts as reachable,
    so ``("unpaired", "paired")`` turns paired data into unpaired rows. Returns ``(dataset, format)``.
    """
    unknown = [f for f in accepted_formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; valid: {', '.join(FORMATS)}")
    fmt = fmt or detect_format(ds.column_names, source=source)
    validate_dataset(ds, fmt, source=source, row_label=row_label)
    if fmt == "paired" and "prompt" not in ds.column_names:
        ds = extract_implicit_prompt(ds, source=source, row_label=row_label)
        validate_dataset(ds, fmt, source=source, row_label=row_label)
        logger.info("%s: extracted the prompt shared by chosen and rejected (%d rows)", source, len(ds))
    if fmt == "paired":
        ds = drop_identical_pairs(ds, source=source, row_label=row_label)
    target = next((t for t in accepted_formats if t == fmt or (fmt, t) in CONVERSIONS), None)
    if target is None:
        raise DataError(
            f"{source}: the dataset is {fmt} data ({', '.join(FORMATS[fmt])}), which this method cannot use "
            f"or convert; it accepts: {describe_formats(accepted_formats)}"
        )
    if target != fmt:
        rows_in = len(ds)
        ds = convert(ds, fmt, target)
        logger.info(
            "%s: converted %s data (%d rows) to %s (%d rows): %s",
            source,
            fmt,
            rows_in,
            target,
            len(ds),
            CONVERSIONS[(fmt, target)],
        )
    return ds, target
