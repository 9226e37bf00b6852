"""User-facing errors.

Every problem a user can fix (a recipe typo, a missing column, a missing file) is raised as an
`AlignmentError` subclass *before* any model is loaded, so the CLI can print one clear message and exit
with status 2 instead of a traceback from deep inside a library.
"""

from __future__ import annotations

EXIT_FAILED = 1  # the run itself failed (e.g. training diverged), not its input
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class AlignmentError(Exception):
    """Base class for errors caused by the user's input; the CLI prints them without a traceback."""

    exit_code: int = EXIT_USER_ERROR


class RecipeError(AlignmentError):
    """A recipe value is unknown, of the wrong type, out of range or missing.

    `path` is the dotted YAML path of the offending key (e.g. ``method.beta``), so the message can point at
    the line the user has to change.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"recipe error at '{path}': {message}" if path else f"recipe error: {message}")


class DataError(AlignmentError):
    """A dataset is missing, unreadable, or does not have the columns/types the method needs."""


class BackendError(AlignmentError):
    """An optional backend (vLLM, DeepSpeed, an embedder) is missing or failed to start."""


class StudyError(AlignmentError):
    """A study file names an unknown key, arm or run, or its dependencies form a cycle."""
