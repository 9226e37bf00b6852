"""Prompts as evaluation and sampling see them: the distinct prompts of a dataset spec, and prompt templates.

It sits in the data layer because both are ways of reading prompts: evaluation, `alignment generate` and
the recipe schema need them, and none of those may import another for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PROMPT_FIELD = "{prompt}"


def distinct_prompts(spec: Any, seed: int, *, key: str = "evaluation.prompts") -> list[str]:
    """The distinct prompts of `spec` (any format that has prompts), in first-seen order; errors name `key`
    (a recipe path or a command-line flag)."""
    from alignment.data.formats import prepare_for_method
    from alignment.data.loading import load_dataset_spec, row_labeller

    dataset, _ = prepare_for_method(
        load_dataset_spec(spec, seed=seed, key=key), ("prompts",), source=key, row_label=row_labeller(spec)
    )
    return list(dict.fromkeys(dataset["prompt"]))


def template_problem(template: str | None) -> str | None:
    """Why a prompt template is unusable (it lacks ``{prompt}``), or None when it is fine or absent."""
    if template is not None and PROMPT_FIELD not in template:
        return f"a prompt template must contain {PROMPT_FIELD} where the prompt goes, got {template!r}"
    return None


def apply_template(template: str | None, prompts: Sequence[str]) -> list[str]:
    """Each prompt inside `template` (None: unchanged). `str.replace`, not `format`, so braces elsewhere in
    a template (code or JSON in in-context examples) stay literal."""
    if template is None:
        return list(prompts)
    return [template.replace(PROMPT_FIELD, prompt) for prompt in prompts]
