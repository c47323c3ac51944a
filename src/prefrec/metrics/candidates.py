"""Ranking metrics over a fixed candidate list (one target among C candidates per case).

Used for LM ranking evaluation: score every candidate (e.g. summed answer log-prob from
:func:`prefrec.lm.scoring.candidate_logps`), rank, and look where the target lands.

Definitions, with ``rank`` = 1-based position of the target after sorting scores descending:

- ``HR@K = mean(rank <= K)`` (with one relevant item this is also Recall@K);
- ``NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0)`` (ideal DCG = 1: one relevant item);
- ``MRR = mean(1 / rank)`` over the whole list (not truncated).

Ties: ``ties="pessimistic"`` (default) puts the target BELOW every candidate with an equal
score, ``rank = #{j : s_j >= s_target}``, so a constant scorer gets rank C, not 1 (a model that
cannot tell candidates apart must not look perfect). ``ties="index"`` breaks ties by candidate
index (lower index ranks first), i.e. a stable descending sort. NaN scores rank below all
numbers (a NaN target is last under either rule).

Pure numpy; accepts torch tensors (detached to CPU) or array-likes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from prefrec.errors import DataError

Ties = Literal["pessimistic", "index"]

__all__ = ["target_ranks", "hr_at_k", "ndcg_at_k", "mrr", "candidate_metrics"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def target_ranks(scores, targets, ties: Ties = "pessimistic") -> np.ndarray:
    """1-based rank of each case's target among its C candidates, shape (B,), int64."""
    s = _np(scores).astype(np.float64)
    t = _np(targets).astype(np.int64).reshape(-1)
    if s.ndim != 2:
        raise DataError(f"scores must be a (cases, candidates) matrix, got shape {s.shape}",
                        where="target_ranks", fix="stack per-case scores into a 2-D array")
    if t.shape[0] != s.shape[0]:
        raise DataError(f"{s.shape[0]} score rows but {t.shape[0]} targets", where="target_ranks",
                        fix="pass one target index per row")
    if t.size and (t.min() < 0 or t.max() >= s.shape[1]):
        raise DataError(f"target index outside 0..{s.shape[1] - 1}", where="target_ranks",
                        fix="targets index the columns of scores")
    if ties not in ("pessimistic", "index"):
        raise DataError(f"unknown ties rule {ties!r}", where="target_ranks",
                        fix="use 'pessimistic' or 'index'")
    rows = np.arange(s.shape[0])
    nan_t = np.isnan(s[rows, t])
    s = np.where(np.isnan(s), -np.inf, s)
    ts = s[rows, t][:, None]
    if ties == "pessimistic":
        r = (s >= ts).sum(1)
    else:
        cols = np.arange(s.shape[1])[None, :]
        r = (s > ts).sum(1) + ((s == ts) & (cols < t[:, None])).sum(1) + 1
    r = np.where(nan_t, s.shape[1], r)   # a NaN target is last
    return r.astype(np.int64)


def hr_at_k(ranks, k: int) -> float:
    """Fraction of cases whose target is in the top ``k``."""
    r = np.asarray(ranks)
    return float((r <= k).mean()) if r.size else float("nan")


def ndcg_at_k(ranks, k: int) -> float:
    """Mean of ``1/log2(rank+1)`` for ranks within ``k``, 0 otherwise (one relevant item)."""
    r = np.asarray(ranks, dtype=np.float64)
    if not r.size:
        return float("nan")
    return float(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0).mean())


def mrr(ranks) -> float:
    """Mean reciprocal rank over the full candidate list."""
    r = np.asarray(ranks, dtype=np.float64)
    return float((1.0 / r).mean()) if r.size else float("nan")


def candidate_metrics(scores, targets, ks: Sequence[int] = (1, 5, 10), ties: Ties = "pessimistic"
                      ) -> dict[str, float]:
    """``HR@K`` and ``NDCG@K`` for each K in ``ks``, ``MRR`` and ``n``, in one dict."""
    r = target_ranks(scores, targets, ties)
    out: dict[str, float] = {}
    for k in ks:
        out[f"HR@{k}"] = hr_at_k(r, k)
        out[f"NDCG@{k}"] = ndcg_at_k(r, k)
    out["MRR"] = mrr(r)
    out["n"] = int(r.size)
    return out
