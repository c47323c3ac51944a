"""Progress with an ETA for loops over evaluation cases or reference-cache batches.

Why: an LM evaluation of a few dozen cases takes minutes on a CPU, and a silent terminal reads
as a hang. Two outputs, so both a person at a terminal and a log file see progress:

- a tqdm bar (cases done, rate, ETA) when stderr is a terminal -- the same policy as the
  training engine's step bar;
- a log line ``<what>: done/total cases, elapsed, ETA`` after the first batch and then every
  ``every`` items (if given) or every ``log_seconds`` -- for logs and non-interactive runs.

The description carries the active :func:`prefrec.logtag.log_tag` (the stage label), so a
study's bars say which stage they belong to.
"""

from __future__ import annotations

import logging
import sys
import time

from prefrec.logtag import current_tag

log = logging.getLogger("prefrec.progress")


class Progress:
    """``p = Progress("rank", total); p(n_done_in_batch); ...; p.close()`` (or ``with``)."""

    def __init__(self, what: str, total: int, *, unit: str = "cases", every: int | None = None,
                 log_seconds: float = 60.0, logger: logging.Logger | None = None, bar: bool | None = None):
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.log_seconds = log_seconds
        self.log = logger or log
        self.done = 0
        self.t0 = time.perf_counter()
        self._last_log: float | None = None
        self._next = every or 0
        show = sys.stderr.isatty() if bar is None else bar
        self._bar = None
        if show and total > 0:
            from tqdm.auto import tqdm

            tag = current_tag()
            self._bar = tqdm(total=total, desc=f"[{tag}] {what}" if tag else what, unit=unit.rstrip("s") or unit,
                             dynamic_ncols=True, leave=False)

    def eta(self) -> float:
        """Seconds left at the mean rate so far."""
        el = time.perf_counter() - self.t0
        return el / self.done * (self.total - self.done) if self.done else float("nan")

    def __call__(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        now = time.perf_counter()
        if self.every:
            due = self.done >= self._next or self.done == self.total
            while self._next <= self.done:
                self._next += self.every
        else:
            due = self._last_log is None or now - self._last_log >= self.log_seconds
        if due and (self.every or self.done < self.total):
            self._last_log = now
            self.log.info("%s: %d/%d %s, %.0f s elapsed, ETA %.0f s", self.what, self.done, self.total,
                          self.unit, now - self.t0, self.eta())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
