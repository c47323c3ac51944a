"""User-facing errors.

Every error a user can cause (bad file, bad config, bad option) is a :class:`PrefrecError`:
it says *where* (file, line, key), *what* is wrong and *how to fix it*. The CLI prints it as
one paragraph and exits with code 2, without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class PrefrecError(Exception):
    """An error caused by the user's input, with a location and a fix."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.what.rstrip("."))
        parts.append(".")
        if self.fix:
            parts.append(f" Fix: {self.fix.rstrip('.')}.")
        return "".join(parts)

    def __str__(self) -> str:
        return self.message


class DataError(PrefrecError):
    """Malformed or inconsistent input data."""


class ConfigError(PrefrecError):
    """Invalid configuration value, unknown key, or bad command-line override."""


def where(path: object, line: int | None = None, column: str | None = None) -> str:
    """Format a location: ``path``, ``path, line 12`` or ``path, line 12, column 'item'``."""
    s = str(path)
    if line is not None:
        s += f", line {line}"
    if column is not None:
        s += f", column {column!r}"
    return s
