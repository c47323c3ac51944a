"""Where datasets live: ``--data-dir`` option, else ``$PREFREC_DATA``, else ``./data``."""

from __future__ import annotations

import os
from pathlib import Path

from prefrec.errors import DataError

ENV_VAR = "PREFREC_DATA"


def data_dir(explicit: str | Path | None = None) -> Path:
    """Resolve the data directory (no existence check; readers name missing files)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("data")


def require(path: Path, what: str, fix: str | None = None) -> Path:
    """Return ``path`` if it exists, else a DataError that names it and how to get it."""
    if not path.exists():
        raise DataError(
            f"{what} not found at {str(path)!r}",
            where=str(path.parent),
            fix=fix or f"pass --data-dir (or set ${ENV_VAR}) to the folder that holds it",
        )
    return path
