"""Chat templates and tokenization with counted truncation (the Text conventions of docs/architecture.md).

* Conversational rows are rendered to text first, with TRL's `apply_chat_template`: the prompt with the
  generation prompt added, each completion as the rendered whole conversation minus the rendered prompt.
  A literal BOS the template writes at the start of the prompt is dropped when the tokenizer adds its own,
  so ``tokenizer(prompt)`` does not start with two BOS tokens.
* Prompt ids are ``tokenizer(prompt)["input_ids"]``; completion ids are
  ``tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos_token_id]``.
* Truncation: the prompt keeps its last ``max_prompt_length`` tokens (the end of a prompt is what the
  completion answers), then each completion keeps its first ``max_length - len(prompt)`` tokens (a completion
  cut this way loses its EOS). A row is dropped when a completion is left with no tokens. Counts are over the
  input rows and come back in a `TruncationReport`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset

from alignment.data.formats import FORMAT_COMPLETIONS, is_conversational_dataset
from alignment.errors import DataError

logger = logging.getLogger(__name__)

_FLAGS = ("_prompt_cut", "_completions_cut", "_dropped")


@dataclass
class TruncationReport:
    """What truncation did to a dataset; every count is over the input rows."""

    rows_in: int
    rows_out: int
    completions_in: int  # completion sequences seen (2 per paired row)
    prompts_truncated: int
    completions_truncated: int  # includes completions cut to nothing
    examples_dropped: int  # rows with a completion left with no tokens
    max_length: int | None
    max_prompt_length: int | None

    @property
    def anything_cut(self) -> bool:
        return bool(self.prompts_truncated or self.completions_truncated or self.examples_dropped)

    def summary(self) -> str:
        if not self.anything_cut:
            return f"no truncation: {self.rows_in} rows fit max_prompt_length={self.max_prompt_length}, max_length={self.max_length}"
        parts = []
        if self.prompts_truncated:
            parts.append(
                f"{self.prompts_truncated} of {self.rows_in} prompts truncated to their last "
                f"{self.max_prompt_length} tokens"
            )
        if self.completions_truncated:
            parts.append(
                f"{self.completions_truncated} of {self.completions_in} completions truncated to fit "
                f"max_length={self.max_length}"
            )
        if self.examples_dropped:
            parts.append(f"{self.examples_dropped} examples dropped (a completion had no tokens left)")
        return "; ".join(parts) + f"; {self.rows_out} of {self.rows_in} rows remain"


def truncate_example(
    prompt_ids: list[int],
    completion_ids: list[list[int]],
    *,
    max_length: int | None,
    max_prompt_length: int | None,
) -> tuple[list[int], list[list[int]], bool, int, bool]:
    """(prompt, completions, prompt_cut, completions_cut, dropped) for one row; completions share the prompt."""
    prompt_cut = max_prompt_length is not None and len(prompt_ids) > max_prompt_length
    if prompt_cut:
        prompt_ids = prompt_ids[len(prompt_ids) - max_prompt_length :]
    budget = None if max_length is None else max(max_length - len(prompt_ids), 0)
    if budget is not None:
        cut = sum(len(ids) > budget for ids in completion_ids)
        completion_ids = [ids[:budget] for ids in completion_ids]
    else:
        cut = 0
    dropped = any(len(ids) == 0 for ids in completion_ids)
    return prompt_ids, completion_ids, prompt_cut, cut, dropped


def render_chat(
    ds: Dataset, fmt: str, tokenizer, *, chat_template: str | None = None, num_proc: int = 1
) -> Dataset:
    """Conversational rows -> rendered strings (plain-text datasets come back unchanged)."""
    if not is_conversational_dataset(ds, fmt):
        return ds
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"the dataset is conversational but the tokenizer ({type(tokenizer).__name__}, "
            f"{getattr(tokenizer, 'name_or_path', '') or 'unnamed'}) has no chat template; set data.chat_template "
            "to a Jinja template string, or use a tokenizer that has one"
        )
    from trl.data_utils import apply_chat_template  # lazy: trl imports transformers

    kwargs = {"chat_template": chat_template} if chat_template is not None else {}
    strip_bos = _adds_bos(tokenizer)
    bos = tokenizer.bos_token

    def render(example: dict, index: int) -> dict:
        if fmt == "negatives":  # TRL knows prompt/completion, not prompt/rejected
            example = {"prompt": example["prompt"], "completion": example["rejected"]}
        try:
            out = apply_chat_template(example, tokenizer, **kwargs)
        except Exception as err:  # noqa: BLE001 — a template failure is the user's data or template
            raise DataError(f"row {index + 1}: the chat template failed: {type(err).__name__}: {err}") from err
        if fmt == "negatives":
            out = {"prompt": out["prompt"], "rejected": out["completion"]}
        if strip_bos and out["prompt"].startswith(bos):
            out["prompt"] = out["prompt"][len(bos) :]
        return out

    return ds.map(render, with_indices=True, num_proc=_procs(num_proc, ds), desc="Applying chat template")


def _adds_bos(tokenizer) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("x")["input_ids"]
    return bos_id is not None and bool(ids) and ids[0] == bos_id and bool(tokenizer.bos_token)


def _procs(num_proc: int, ds: Dataset) -> int | None:
    return num_proc if num_proc > 1 and len(ds) >= 2 * num_proc else None


def tokenize_dataset(
    ds: Dataset,
    fmt: str,
    tokenizer,
    *,
    max_length: int | None,
    max_prompt_length: int | None,
    chat_template: str | None = None,
    num_proc: int = 1,
) -> tuple[Dataset, TruncationReport]:
    """Render, tokenize and truncate validated `fmt` data.

    Adds ``prompt_input_ids`` and ``<column>_input_ids`` for each completion column (chosen/rejected for
    paired, completion for unpaired, rejected for negatives); text columns (rendered) and ``label`` stay.
    """
    eos = tokenizer.eos_token_id
    if eos is None and FORMAT_COMPLETIONS[fmt]:
        raise DataError(
            "the tokenizer has no eos_token; completions end with EOS, so set one on the tokenizer"
        )
    ds = render_chat(ds, fmt, tokenizer, chat_template=chat_template, num_proc=num_proc)
    columns = FORMAT_COMPLETIONS[fmt]

    def tokenize(batch: dict) -> dict:
        prompts = tokenizer(batch["prompt"])["input_ids"]
        completions = [
            [ids + [eos] for ids in tokenizer(batch[c], add_special_tokens=False)["input_ids"]]
            for c in columns
        ]
        out: dict[str, list] = {"prompt_input_ids": [], **{f"{c}_input_ids": [] for c in columns}}
        out.update({flag: [] for flag in _FLAGS})
        for i, prompt_ids in enumerate(prompts):
            prompt_ids, kept, prompt_cut, cut, dropped = truncate_example(
                prompt_ids,
                [per_column[i] for per_column in completions],
                max_length=max_length,
                max_prompt_length=max_prompt_length,
            )
            out["prompt_input_ids"].append(prompt_ids)
            for column, ids in zip(columns, kept):
                out[f"{column}_input_ids"].append(ids)
            out["_prompt_cut"].append(prompt_cut)
            out["_completions_cut"].append(cut)
            out["_dropped"].append(dropped)
        return out

    ds = ds.map(tokenize, batched=True, num_proc=_procs(num_proc, ds), desc="Tokenizing")
    flags = ds.select_columns(list(_FLAGS)).with_format("numpy")[:]
    dropped = flags["_dropped"].astype(bool)
    report = TruncationReport(
        rows_in=len(ds),
        rows_out=int((~dropped).sum()),
        completions_in=len(ds) * len(columns),
        prompts_truncated=int(flags["_prompt_cut"].sum()),
        completions_truncated=int(flags["_completions_cut"].sum()),
        examples_dropped=int(dropped.sum()),
        max_length=max_length,
        max_prompt_length=max_prompt_length,
    )
    ds = ds.remove_columns(list(_FLAGS))
    if dropped.any():
        ds = ds.select(np.flatnonzero(~dropped)).flatten_indices()
    if report.anything_cut:
        logger.warning("truncation: %s", report.summary())
    return ds, report


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(lengths.mean()),
        "p50": float(np.percentile(lengths, 50)),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
    }


def dataset_statistics(tokenized: Dataset, fmt: str) -> dict:
    """Rows, token-length summaries (mean/p50/p95/max) and, for unpaired data, the label balance."""
    stats: dict = {"rows": len(tokenized), "format": fmt}
    if len(tokenized) == 0:
        return stats
    table = tokenized.with_format("arrow")[:]

    def lengths(column: str) -> np.ndarray:
        return pc.list_value_length(table[column]).to_numpy(zero_copy_only=False)

    stats["prompt_tokens"] = length_stats(lengths("prompt_input_ids"))
    columns = FORMAT_COMPLETIONS[fmt]
    if columns:
        per_column = {c: lengths(f"{c}_input_ids") for c in columns}
        stats["completion_tokens"] = length_stats(np.concatenate(list(per_column.values())))
        if len(columns) > 1:
            stats.update({f"{c}_tokens": length_stats(v) for c, v in per_column.items()})
    if fmt == "unpaired":
        labels = table["label"].to_numpy(zero_copy_only=False).astype(bool)
        stats["label_balance"] = {
            "desirable": int(labels.sum()),
            "undesirable": int((~labels).sum()),
            "desirable_fraction": float(labels.mean()),
        }
    return stats
