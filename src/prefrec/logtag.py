"""``with log_tag("psl"):`` prefixes every log line written inside the block with ``[psl]``.

Why: ``prefrec compare`` and ``prefrec run`` train several runs one after another in one
process; without a tag their log lines (epochs, metrics, checkpoints) cannot be told apart.
A record factory (not a handler filter) is used so the tag reaches every handler, including
ones a user or library installs, and nested tags read ``[study/psl]``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

_tags: list[str] = []
_base_factory = logging.getLogRecordFactory()


def _factory(*args, **kwargs) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    if _tags and isinstance(record.msg, str):
        record.msg = f"[{'/'.join(_tags)}] {record.msg}"
    return record


@contextlib.contextmanager
def log_tag(tag: str) -> Iterator[None]:
    """Tag the log lines of one run (``[tag] message``) until the block ends."""
    global _base_factory
    if not _tags:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)
    _tags.append(tag)
    try:
        yield
    finally:
        _tags.pop()
        if not _tags:
            logging.setLogRecordFactory(_base_factory)


def current_tag() -> str:
    """The active tag (``""`` outside ``log_tag``); progress bars use it as their description."""
    return "/".join(_tags)
