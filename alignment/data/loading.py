"""Loading a recipe's dataset: a registered builder, a local file or directory, or a hub id.

A dataset spec (``alignment.recipe.schema.DatasetSpec``; any object with these attributes will do) has
``name``, ``split``, ``subset``, ``args`` (dict) and ``num_samples`` (int | None). ``name`` resolves in order:

1. a builder registered in `DATASET_BUILDERS` (``toy-paired``), called as ``fn(split=, seed=, **args)``;
2. a local path: a ``.json``/``.jsonl``/``.parquet``/``.csv`` file, or a directory written by
   ``Dataset.save_to_disk`` (a missing path is an error naming the recipe key);
3. otherwise a Hugging Face hub id, ``datasets.load_dataset(name, subset, split=split)``.

``num_samples`` keeps the first N rows (no shuffle, so runs are reproducible and cheap to inspect).
"""

from __future__ import annotations

import codecs
import importlib
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from alignment.errors import DataError
from alignment.registry import Registry, closest, unknown_name_message

logger = logging.getLogger(__name__)

DATASET_BUILDERS: Registry[Callable[..., datasets.Dataset]] = Registry("dataset builder")

# Modules whose import registers built-in builders; imported on first lookup so `alignment.data` stays light.
BUILTIN_BUILDER_MODULES = ("alignment.toy.builders",)

FILE_LOADERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
TEXT_LOADERS = ("json", "csv")


def load_dataset_spec(spec: Any, *, seed: int = 0, key: str = "data.train") -> datasets.Dataset:
    """The dataset `spec` names, cut to ``spec.num_samples`` rows; `key` is its recipe path, for messages."""
    name = str(spec.name)
    for module in BUILTIN_BUILDER_MODULES:
        importlib.import_module(module)
    if name in DATASET_BUILDERS:
        ds = _from_builder(name, spec, seed=seed, key=key)
    elif not _looks_like_path(name) and "/" not in name and closest_builder(name, cutoff=0.8):
        raise DataError(  # a typo of a builder: before the args check, and before the hub retries
            f"{key}.name: {unknown_name_message('dataset builder', name, DATASET_BUILDERS.names())}"
        )
    elif spec.args:
        raise DataError(
            f"{key}.args {dict(spec.args)} are options of a dataset builder, but '{name}' is a "
            f"{'local file' if _looks_like_path(name) else 'hub dataset'}, which takes none: remove {key}.args "
            f"(e.g. {key}={{name: {name}}} on the command line)"
        )
    elif _looks_like_path(name):
        ds = _from_path(Path(name).expanduser(), key=key)
    else:
        ds = _from_hub(name, spec.subset, spec.split, key=key)
    return _first_rows(ds, spec.num_samples, name=name, key=key)


def _looks_like_path(name: str) -> bool:
    path = Path(name).expanduser()
    return (
        path.suffix.lower() in FILE_LOADERS or path.exists() or name.startswith(("/", "./", "../", "~", "."))
    )


def _from_builder(name: str, spec: Any, *, seed: int, key: str) -> datasets.Dataset:
    builder = DATASET_BUILDERS.get(name)
    args = dict(spec.args or {})
    if spec.subset is not None:
        raise DataError(
            f"{key}.subset is set, but '{name}' is a dataset builder; pass its options in {key}.args"
        )
    try:
        inspect.signature(builder).bind(split=spec.split, seed=seed, **args)
    except TypeError as err:
        params = [p for p in inspect.signature(builder).parameters if p not in ("split", "seed")]
        raise DataError(
            f"{key}.args does not fit dataset builder '{name}' ({err}); it takes: {', '.join(params) or 'no args'}"
        ) from None
    ds = builder(split=spec.split, seed=seed, **args)
    if not isinstance(ds, datasets.Dataset):
        raise TypeError(f"dataset builder '{name}' returned {type(ds).__name__}, not datasets.Dataset")
    return ds


def _from_path(path: Path, *, key: str) -> datasets.Dataset:
    if not path.exists():
        raise DataError(
            f"data file '{path}' does not exist (set by {key}.name); give an existing .json/.jsonl/.parquet/.csv "
            f"file, a directory written by Dataset.save_to_disk, or a builder name ({_builder_names()})"
        )
    if path.is_dir():
        return _from_disk(path, key=key)
    loader = FILE_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(
            f"'{path}' (set by {key}.name) has an unsupported extension '{path.suffix}'; "
            f"use one of {', '.join(FILE_LOADERS)}"
        )
    if loader in TEXT_LOADERS:
        _check_text_file(path, loader, key=key)
    try:
        return datasets.load_dataset(loader, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 — re-raised as a message that names the file and line
        raise DataError(_unreadable_file_message(path, loader, err)) from err


def _check_text_file(path: Path, loader: str, *, key: str) -> None:
    """A text data file must be UTF-8 and hold records (the loaders fail on either without naming the
    file or the line)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lineno, records = 0, 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = decoder.decode(raw)
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}: line {lineno}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    f"save the file as UTF-8 (set by {key}.name)"
                ) from None
            records += bool(line.strip())
    if records == 0:
        raise DataError(f"{path}: the file is empty: no records (set by {key}.name)")
    if loader == "csv" and records == 1:
        raise DataError(f"{path}: the file has a header line but no rows (set by {key}.name)")


def row_labeller(spec: Any) -> Callable[[int], str]:
    """`label(i)` names the dataset's row i as a user finds it: 'row i+1', with its line in a local JSONL or
    CSV file (editors count lines from 1; a CSV's first line is its header)."""
    path = Path(str(spec.name)).expanduser()
    loader = FILE_LOADERS.get(path.suffix.lower())
    if spec.name in DATASET_BUILDERS or not path.is_file() or loader not in TEXT_LOADERS:
        return lambda i: f"row {i + 1}"
    if loader == "csv":
        return lambda i: f"row {i + 1} (line {i + 2})"
    lines: list[int] = []  # the line of each record, read when a message first needs one

    def label(i: int) -> str:
        if not lines:
            text = path.read_text(encoding="utf-8")
            if text.lstrip().startswith("["):  # one JSON array: its records have no lines of their own
                lines.append(0)
            else:  # JSON Lines: one record per non-blank line
                lines.extend(n for n, line in enumerate(text.splitlines(), start=1) if line.strip())
        return f"row {i + 1} (line {lines[i]})" if lines[0] and i < len(lines) else f"row {i + 1}"

    return label


def _from_disk(path: Path, *, key: str) -> datasets.Dataset:
    if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        raise DataError(
            f"'{path}' (set by {key}.name) is a directory but not one written by Dataset.save_to_disk "
            "(no state.json); point at a data file inside it instead"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"could not read the saved dataset '{path}' (set by {key}.name): {err}") from err
    if isinstance(loaded, datasets.DatasetDict):
        raise DataError(
            f"'{path}' (set by {key}.name) holds several splits ({', '.join(loaded)}); point at one of its "
            "split directories, e.g. " + str(path / next(iter(loaded)))
        )
    return loaded


def _unreadable_file_message(path: Path, loader: str, err: Exception) -> str:
    """Name the first bad line of a JSON file (the loaders only say 'row N' of some block)."""
    if loader == "json":
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            json.loads(text)
        except json.JSONDecodeError as whole_err:
            stripped = text.lstrip()
            if stripped.startswith("[") or (stripped.startswith("{") and text.count("\n") <= 1):
                return f"{path}: line {whole_err.lineno}: malformed JSON: {whole_err.msg}"
            for lineno, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    json.loads(line)
                except json.JSONDecodeError as line_err:
                    return f"{path}: line {lineno}: malformed JSON ({line_err.msg}): {line.strip()[:80]}"
    cause = err.__cause__ or err
    return f"{path}: could not read the {loader} file: {type(cause).__name__}: {cause}"


def _from_hub(name: str, subset: str | None, split: str, *, key: str) -> datasets.Dataset:
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # noqa: BLE001 — offline, missing, gated, bad split: one message
        hint = closest_builder(name)
        did_you_mean = f" (did you mean the builder '{hint}'?)" if hint else ""
        raise DataError(
            f"{key}.name '{name}' is neither a dataset builder{did_you_mean} nor a local file, and loading it "
            f"from the Hugging Face hub failed: the hub could not be reached or the dataset/subset/split does "
            f"not exist ({type(err).__name__}: {err}). Offline, use a local .json/.jsonl/.parquet/.csv file, "
            f"a save_to_disk directory, or a builder ({_builder_names()})"
        ) from err
    if not isinstance(ds, datasets.Dataset):
        raise DataError(f"{key}: '{name}' did not load as a single split; set {key}.split")
    return ds


def _first_rows(ds: datasets.Dataset, num_samples: int | None, *, name: str, key: str) -> datasets.Dataset:
    if num_samples is None:
        return ds
    if num_samples > len(ds):
        logger.warning(
            "%s.num_samples=%d but '%s' has only %d rows; using all %d",
            key,
            num_samples,
            name,
            len(ds),
            len(ds),
        )
        return ds
    return ds.select(range(num_samples))


def closest_builder(name: str, *, cutoff: float = 0.5) -> str | None:
    return closest(name, DATASET_BUILDERS.names(), cutoff=cutoff)


def _builder_names() -> str:
    return ", ".join(DATASET_BUILDERS.names()) or "none registered"
