"""Markdown tables of evaluation figures: one row per run (or stage), one column per key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: (key in the row, column title, format of its value)
Column = tuple[str, str, str]


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub markdown table; a key a row lacks (a stage without self-labels, a run without harmful rate)
    shows as —."""
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "—" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
