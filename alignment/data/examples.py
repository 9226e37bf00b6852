"""Recipe data -> tokenized examples: what static-data runs train on, and what on-policy runs take their
prompts from.

It runs before any model loads, so every data mistake (file, column, format, nothing left after
truncation) stops the run first, and `--dry-run` can report on the result.
"""

from __future__ import annotations

from alignment.errors import DataError


def load_examples(recipe, tokenizer, formats: tuple[str, ...], spec_key: str = "train"):
    """Dataset spec -> validated, converted, tokenized dataset, its format and the truncation report."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec, row_labeller
    from alignment.data.tokenize import tokenize_dataset

    spec = getattr(recipe.data, spec_key)
    seed = int(recipe.training.get("seed", 0))
    raw = load_dataset_spec(spec, seed=seed, key=f"data.{spec_key}")
    dataset, fmt = prepare_for_method(raw, formats, source=f"data.{spec_key}", row_label=row_labeller(spec))
    tokenized, report = tokenize_dataset(
        dataset,
        fmt,
        tokenizer,
        max_length=recipe.data.max_length,
        max_prompt_length=recipe.data.max_prompt_length,
        chat_template=recipe.data.chat_template,
        num_proc=recipe.data.num_proc,
    )
    if len(tokenized) == 0:
        raise DataError(f"data.{spec_key}: no example survived tokenization ({report.summary()})")
    return tokenized, fmt, report
