"""Splits and filters over :class:`Interactions`, deterministic given a seed.

Every split returns a dict of named parts (``train``/``val``/``test``, or ``train``/``test``
for two ratios) that are row subsets of the input: the user and item id space is shared, so a
model trained on ``train`` scores ``test`` items without remapping. Ties in time are broken by
row order (stable sorts everywhere), so the result depends only on the data and the seed.

Which split is which protocol:

- :func:`leave_one_out` - per user, last item -> test, second last -> val (SASRec/BERT4Rec).
- :func:`user_split` - *users* split 8:1:1 (LLaRA / S-DPO); each user's whole sequence goes to one part.
- :func:`global_time_split` - rows ordered by time, cut 8:1:1 globally (no future leaks into train).
- :func:`random_split` - rows at random (``per_user=True``: each user's rows, IR-Benchmark IID style).
- :func:`holdout_validation` - per user ``max(floor(0.1 n_u), 1)`` random train items -> val (IR-Benchmark).
- :func:`k_core` - iterative k-core filter; :func:`compact` reindexes afterwards if wanted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from prefrec.data.interactions import Interactions
from prefrec.errors import ConfigError, DataError

Parts = dict[str, Interactions]


def _names(n: int) -> tuple[str, ...]:
    return ("train", "test") if n == 2 else ("train", "val", "test")


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
    r = np.asarray(ratios, dtype=np.float64)
    if len(r) not in (2, 3) or (r < 0).any() or not np.isclose(r.sum(), 1.0):
        raise ConfigError(f"ratios {list(ratios)} must be 2 or 3 non-negative numbers summing to 1",
                          where="ratios", fix="e.g. (0.8, 0.1, 0.1) for train/val/test or (0.8, 0.2) for train/test")
    return r


def _parts(inter: Interactions, labels: np.ndarray, names: Sequence[str], tag: str) -> Parts:
    return {name: inter.subset(np.flatnonzero(labels == k), source=f"{inter.source} [{tag}:{name}]")
            for k, name in enumerate(names)}


def time_order(inter: Interactions, by: str = "time") -> np.ndarray:
    """Row order grouped by user, oldest first (``by="row"``: file order within each user)."""
    if by not in ("time", "row"):
        raise ConfigError(f"unknown order {by!r}", where="by", fix="use 'time' or 'row'")
    if by == "time":
        if inter.timestamp is None:
            raise DataError("this split needs timestamps and the data has none", where=inter.source,
                            fix="use a dataset with timestamps, pass by='row' to use file order, or use random_split")
        return np.lexsort((np.arange(len(inter)), inter.timestamp, inter.user))
    return np.argsort(inter.user, kind="stable")


def _rank_within_user(users_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows already grouped by user: (0-based rank within the user, that user's row count)."""
    n = len(users_sorted)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    start = np.ones(n, dtype=bool)
    start[1:] = users_sorted[1:] != users_sorted[:-1]
    starts = np.flatnonzero(start)
    group = np.cumsum(start) - 1
    sizes = np.diff(np.append(starts, n))
    rank = np.arange(n) - starts[group]
    return rank, sizes[group]


def leave_one_out(inter: Interactions, by: str = "time") -> Parts:
    """Per user: last interaction -> ``test``, second last -> ``val``, the rest -> ``train``.

    Users with 2 interactions give one to test and none to val; users with 1 keep it in train.
    """
    order = time_order(inter, by)
    rank, size = _rank_within_user(inter.user[order])
    lab = np.zeros(len(inter), dtype=np.int64)
    from_end = size - 1 - rank
    lab[order[(from_end == 0) & (size >= 2)]] = 2
    lab[order[(from_end == 1) & (size >= 3)]] = 1
    return _parts(inter, lab, ("train", "val", "test"), "loo")


def user_split(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Parts:
    """Users (with at least one row) shuffled with ``seed`` and split by ``ratios`` (LLaRA/S-DPO 8:1:1).

    ``val``/``test`` get ``floor(ratio * n_users)`` users each, ``train`` the rest (1,220 -> 976/122/122).
    """
    r = _check_ratios(ratios)
    users = np.unique(inter.user)
    perm = np.random.default_rng(seed).permutation(users)
    n = len(users)
    tail = [int(np.floor(x * n + 1e-9)) for x in r[1:]]
    sizes = [n - sum(tail), *tail]
    part_of_user = np.zeros(inter.n_users, dtype=np.int64)
    for k, (a, b) in enumerate(zip(np.cumsum([0, *sizes[:-1]]), np.cumsum(sizes))):
        part_of_user[perm[a:b]] = k
    return _parts(inter, part_of_user[inter.user], _names(len(r)), "users")


def global_time_split(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> Parts:
    """All rows ordered by time (ties: row order) and cut at ``floor(cumsum(ratios) * n)``."""
    r = _check_ratios(ratios)
    if inter.timestamp is None:
        raise DataError("a time split needs timestamps and the data has none", where=inter.source,
                        fix="use random_split or user_split for data without time")
    order = np.lexsort((np.arange(len(inter)), inter.timestamp))
    cuts = np.floor(np.cumsum(r)[:-1] * len(inter) + 1e-9).astype(np.int64)
    lab = np.empty(len(inter), dtype=np.int64)
    lab[order] = np.searchsorted(cuts, np.arange(len(inter)), side="right")
    return _parts(inter, lab, _names(len(r)), "time")


def random_split(inter: Interactions, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                 per_user: bool = False) -> Parts:
    """Rows at random by ``ratios``. ``per_user=True`` splits each user's rows separately
    (first ``floor(r * n_u)`` of a shuffled list go to train, as IR-Benchmark's IID split does)."""
    r = _check_ratios(ratios)
    rng = np.random.default_rng(seed)
    n = len(inter)
    perm = rng.permutation(n)
    lab = np.empty(n, dtype=np.int64)
    if not per_user:
        cuts = np.floor(np.cumsum(r)[:-1] * n + 1e-9).astype(np.int64)
        lab[perm] = np.searchsorted(cuts, np.arange(n), side="right")
    else:
        order = perm[np.argsort(inter.user[perm], kind="stable")]  # grouped by user, random within
        rank, size = _rank_within_user(inter.user[order])
        cum = np.cumsum(r)[:-1]
        cuts = np.floor(size[:, None] * cum[None, :] + 1e-9)
        lab[order] = (rank[:, None] >= cuts).sum(axis=1)
    return _parts(inter, lab, _names(len(r)), "random")


def holdout_validation(train: Interactions, seed: int = 0, frac: float = 0.1,
                       min_rows: int = 2) -> tuple[Interactions, Interactions]:
    """Per user, ``max(floor(frac * n_u), 1)`` random rows of ``train`` -> validation (IR-Benchmark CF
    protocol). Users with fewer than ``min_rows`` rows keep them all in train. Returns (train, val)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(train))
    order = perm[np.argsort(train.user[perm], kind="stable")]
    rank, size = _rank_within_user(train.user[order])
    n_val = np.maximum(np.floor(frac * size + 1e-9), 1)
    is_val = np.zeros(len(train), dtype=bool)
    is_val[order] = (rank < n_val) & (size >= min_rows)
    return (train.subset(np.flatnonzero(~is_val), source=f"{train.source} [holdout:train]"),
            train.subset(np.flatnonzero(is_val), source=f"{train.source} [holdout:val]"))


def k_core(inter: Interactions, k: int = 10, item_k: int | None = None) -> Interactions:
    """Iteratively drop users with < ``k`` rows and items with < ``item_k`` (default ``k``) rows
    until both hold (duplicates count as rows; dedupe first if that matters). Id space kept."""
    item_k = k if item_k is None else item_k
    keep = np.ones(len(inter), dtype=bool)
    while True:
        uc = np.bincount(inter.user[keep], minlength=inter.n_users)
        ic = np.bincount(inter.item[keep], minlength=inter.n_items)
        new = keep & (uc[inter.user] >= k) & (ic[inter.item] >= item_k)
        if new.sum() == keep.sum():
            break
        keep = new
    return inter.subset(np.flatnonzero(keep), source=f"{inter.source} [{k}-core]")


def compact(inter: Interactions) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """Reindex to the users/items that occur. Returns (interactions, kept old user idx, kept old item idx);
    use the item array to subset a catalog: ``[catalog.titles[i] for i in items]``."""
    users, u_new = np.unique(inter.user, return_inverse=True)
    items, i_new = np.unique(inter.item, return_inverse=True)
    out = Interactions(user=u_new, item=i_new, n_users=len(users), n_items=len(items),
                       timestamp=inter.timestamp, rating=inter.rating,
                       user_ids=None if inter.user_ids is None else inter.user_ids[users],
                       item_ids=None if inter.item_ids is None else inter.item_ids[items], source=inter.source)
    return out, users, items
