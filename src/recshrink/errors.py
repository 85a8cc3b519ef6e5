"""User-facing errors.

Every error a user can cause (bad file, bad recipe key, bad argument) is raised as a
:class:`RecshrinkError`; the CLI prints its message on one line and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path


class RecshrinkError(Exception):
    """An error caused by user input; its message is one self-contained line."""


class DataError(RecshrinkError):
    """Malformed or unusable input data, located by file and line.

    Args:
        path: The offending file.
        message: What is wrong.
        line: 1-based line number, if the problem is on one line.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class RecipeError(RecshrinkError):
    """An invalid recipe value, located by its dotted key path."""
