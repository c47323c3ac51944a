"""Popularity-bias metrics for any recommender evaluated on candidate cases (LM or classic).

Inputs are plain arrays, so generated LM answers, candidate-scoring LMs, SASRec and the
popularity ranker are all judged the same way:

* ``recommended``: the recommended item id per case, shape ``(B,)`` (top-1), or a top-k list
  per case, shape ``(B, k)`` (best first). **Invalid answers** (an LM output that names no
  candidate, or names several) are encoded as ``-1`` (``None`` is accepted in Python lists and
  converted to ``-1``). An invalid answer is a *miss* for hit rates (as in S-DPO's HR@1, which
  divides by all test prompts) and is *left out* of every "what was recommended" statistic
  (head share, average popularity, coverage), because there is no item to measure; the share of
  valid answers is reported as ``ValidRatio`` so the two are never confused.
* ``targets``: the held-out item per case, shape ``(B,)``.
* ``counts``: training popularity of every item, shape ``(n_items,)``: the number of training
  interactions (for sequence cases: distinct training users who interacted with the item, see
  :func:`prefrec.train.sequential.item_counts`). Only the training split may be used, otherwise
  the "popularity" leaks the test targets.

Popularity groups (:func:`popularity_groups`). For item ``i`` let ``above(i)`` be the fraction
of all ``n_items`` items whose training count is *strictly* larger than ``c_i``:

* head: ``above(i) < head`` (default 0.2: "top 20% items by training popularity"),
* tail: ``above(i) >= 1 - tail`` (default tail = 0.5: "bottom 50%"),
* mid:  everything in between.

Ties are therefore always resolved toward the *more popular* group: all items tied with the
item at the 20% boundary are head, and items tied across the 50% boundary are mid. Groups thus
never split equal-popularity items, at the price of not having exactly 20% / 50% of the items;
the realised sizes are reported (``items/head`` ...). An item never seen in training
(count 0) has ``above`` = share of items seen in training, so it is tail whenever at least half
of the items were seen (always the case on our datasets). The definition is the same for every
model, which is what matters for comparisons.

Definitions (names are the keys of :func:`popularity_report`'s result; ``@k`` = list length):

* ``ValidRatio``: share of cases with a valid top-1 answer.
* ``HeadShare@k``: share of valid recommended entries (all k slots) that are head items.
* ``TailShare@k``: same for tail items.
* ``AvgPop@k``: mean training count of valid recommended entries (ARP, Abdollahpouri et al.).
* ``AvgPop/target``: mean training count of the targets (all cases): the level an unbiased
  perfect recommender would show. ``PopLift@k = AvgPop@k / AvgPop/target`` (> 1: the model
  recommends more popular items than users actually chose next).
* ``TargetHeadShare``: share of targets that are head items (reference for ``HeadShare``).
* ``Coverage@k``: distinct valid recommended items / ``n_items``.
* ``HR@1/<group>``: HR@1 over the cases whose *target* is in the group (invalid = miss);
  ``HR@k/<group>`` likewise when ``k > 1``. ``cases/<group>``: number of those cases.
A group with no cases gets ``nan`` (not 0: nothing was measured).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prefrec.errors import DataError

__all__ = ["HEAD", "MID", "TAIL", "GROUP_NAMES", "popularity_groups", "as_recommendations",
           "popularity_report"]

HEAD, MID, TAIL = 0, 1, 2
GROUP_NAMES = ("head", "mid", "tail")
INVALID = -1


def popularity_groups(counts: Sequence[float] | np.ndarray, head: float = 0.2, tail: float = 0.5) -> np.ndarray:
    """Group code per item (0 = head, 1 = mid, 2 = tail) from training counts.

    ``head`` and ``tail`` are item fractions (module docstring: ties go to the more popular
    group). Needs ``0 < head <= 1 - tail < 1``.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise DataError(f"popularity counts must be a non-empty 1-D array, got shape {c.shape}",
                        where="popularity_groups", fix="pass one training count per item")
    if not (0 < head <= 1 - tail < 1):
        raise DataError(f"invalid group fractions head={head}, tail={tail}", where="popularity_groups",
                        fix="use 0 < head <= 1 - tail < 1, e.g. head=0.2, tail=0.5")
    n = c.size
    # above[i] = #items with a strictly larger count, via the sorted counts.
    srt = np.sort(c)
    above = (n - np.searchsorted(srt, c, side="right")) / n
    groups = np.full(n, MID, dtype=np.int8)
    groups[above >= 1 - tail] = TAIL
    groups[above < head] = HEAD
    return groups


def as_recommendations(recommended: Sequence | np.ndarray) -> np.ndarray:
    """``(B,)`` or ``(B, k)`` int64 array of item ids, ``None`` -> ``-1`` (invalid answer)."""
    if isinstance(recommended, np.ndarray) and recommended.dtype != object:
        arr = recommended
    else:
        def conv(x):
            if x is None:
                return INVALID
            if isinstance(x, (list, tuple, np.ndarray)):
                return [INVALID if y is None else y for y in x]
            return x
        rows = [conv(x) for x in recommended]
        arr = np.asarray(rows)
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), INVALID, arr)
    arr = arr.astype(np.int64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"recommendations must have shape (B,) or (B, k), got {arr.shape}",
                        where="popularity_report", fix="pass one item id (or top-k list) per case")
    return arr


def popularity_report(recommended: Sequence | np.ndarray, targets: Sequence[int] | np.ndarray,
                      counts: Sequence[float] | np.ndarray, *, head: float = 0.2,
                      tail: float = 0.5) -> dict[str, float]:
    """All popularity-bias numbers for one evaluation (definitions in the module docstring).

    ``recommended``: ``(B,)`` top-1 ids or ``(B, k)`` top-k lists, ``-1``/``None`` = invalid;
    ``targets``: ``(B,)``; ``counts``: ``(n_items,)`` training counts.
    """
    rec = as_recommendations(recommended)
    tgt = np.asarray(targets, dtype=np.int64).reshape(-1)
    c = np.asarray(counts, dtype=np.float64)
    if rec.shape[0] != tgt.shape[0]:
        raise DataError(f"{rec.shape[0]} recommendations but {tgt.shape[0]} targets",
                        where="popularity_report", fix="pass exactly one recommendation per case")
    n_items = c.size
    for name, arr in (("recommended", rec), ("target", tgt)):
        bad = (arr < INVALID) | (arr >= n_items) if name == "recommended" else (arr < 0) | (arr >= n_items)
        if bad.any():
            v = int(arr[bad][0])
            raise DataError(f"{name} item id {v} is outside the {n_items} items with counts",
                            where="popularity_report",
                            fix="use catalog indices (0-based) and counts over the whole catalog; -1 marks an invalid answer")
    groups = popularity_groups(c, head, tail)
    k = rec.shape[1]
    valid = rec >= 0
    flat = rec[valid]
    out: dict[str, float] = {"cases": float(tgt.size), "ValidRatio": float(valid[:, 0].mean()) if tgt.size else float("nan")}

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if x.size else float("nan")

    out[f"HeadShare@{k}"] = mean(groups[flat] == HEAD)
    out[f"TailShare@{k}"] = mean(groups[flat] == TAIL)
    out[f"AvgPop@{k}"] = mean(c[flat])
    out["AvgPop/target"] = mean(c[tgt])
    out[f"PopLift@{k}"] = (out[f"AvgPop@{k}"] / out["AvgPop/target"]
                           if out["AvgPop/target"] > 0 else float("nan"))
    out["TargetHeadShare"] = mean(groups[tgt] == HEAD)
    out[f"Coverage@{k}"] = float(np.unique(flat).size / n_items)
    hit1 = rec[:, 0] == tgt
    hitk = (rec == tgt[:, None]).any(axis=1)
    tg = groups[tgt]
    for g, name in enumerate(GROUP_NAMES):
        sel = tg == g
        out[f"items/{name}"] = float((groups == g).sum())
        out[f"cases/{name}"] = float(sel.sum())
        out[f"HR@1/{name}"] = mean(hit1[sel])
        if k > 1:
            out[f"HR@{k}/{name}"] = mean(hitk[sel])
    return out
