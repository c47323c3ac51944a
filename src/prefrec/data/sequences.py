"""Sequence cases and candidate lists shared by LM and sequential models.

A :class:`SequenceCase` is one "given this history, which item comes next?" question with its
candidate list. Both the LM path (prompts over candidate titles) and SASRec-style models score
exactly these cases, so their metrics are comparable.

Construction follows LLaRA / S-DPO (research/lm_side.md §1.2, §1.4): each user's time-ordered
sequence is cut into sliding windows (history = at most the last 10 items before the target,
windows with fewer than 3 history items dropped), and each case gets 20 candidates = the target
plus 19 sampled negatives, shuffled. Negatives are drawn with a generator seeded from the case
itself, so a case's candidates never depend on which other cases are built alongside it.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, replace
from collections.abc import Sequence as CollectionSequence
from typing import Iterable, Sequence

import numpy as np

from prefrec.data.interactions import Dataset, Interactions
from prefrec.errors import ConfigError, DataError


@dataclass(frozen=True)
class SequenceCase:
    """One next-item case. ``candidates`` holds the target exactly once (shuffled) and
    ``target_pos`` is its index; before :func:`add_candidates` they are ``()`` and ``-1``."""

    user: int
    history: tuple[int, ...]
    target: int
    candidates: tuple[int, ...]
    target_pos: int
    history_ratings: tuple[float, ...] | None = None
    timestamp: float | None = None


def user_sequences(inter: Interactions, users: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """Row indices of each user's interactions, oldest first (ties and untimed data: row order)."""
    if inter.timestamp is not None:
        order = np.lexsort((np.arange(len(inter)), inter.timestamp, inter.user))
    else:
        order = np.argsort(inter.user, kind="stable")
    counts = np.bincount(inter.user, minlength=inter.n_users)
    chunks = np.split(order, np.cumsum(counts)[:-1])
    wanted = range(inter.n_users) if users is None else users
    return {int(u): chunks[int(u)] for u in wanted if counts[int(u)] > 0}


def build_sequences(inter: Interactions, users: Iterable[int] | None = None, max_history: int = 10,
                    min_history: int = 3) -> list[SequenceCase]:
    """Sliding windows over each user's time-ordered sequence: for every position t, history =
    the last ``max_history`` items before t; windows with fewer than ``min_history`` are dropped.

    Cases come user by user (ascending index), oldest target first, without candidates.
    """
    if max_history < 1 or min_history < 0 or min_history > max_history:
        raise ConfigError(f"need 0 <= min_history ({min_history}) <= max_history ({max_history}), max_history >= 1",
                          where="max_history/min_history", fix="LLaRA/S-DPO use max_history=10, min_history=3")
    cases: list[SequenceCase] = []
    for u, rows in user_sequences(inter, users).items():
        items = inter.item[rows].tolist()
        ratings = None if inter.rating is None else inter.rating[rows].tolist()
        times = None if inter.timestamp is None else inter.timestamp[rows].tolist()
        for t in range(min_history, len(items)):
            lo = max(0, t - max_history)
            cases.append(SequenceCase(
                user=u, history=tuple(items[lo:t]), target=items[t], candidates=(), target_pos=-1,
                history_ratings=None if ratings is None else tuple(ratings[lo:t]),
                timestamp=None if times is None else times[t]))
    return cases


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a counter-based hash, so each case draws its own random stream."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def case_keys(cases: Sequence[SequenceCase], seed: int) -> np.ndarray:
    """A 64-bit key per case from (seed, user, target, history length, history crc32): the case's
    candidates depend on these and nothing else (not on which other cases are built with it)."""
    words = np.asarray([[c.user, c.target, len(c.history), zlib.crc32(np.asarray(c.history, np.int64).tobytes())]
                        for c in cases], dtype=np.uint64).reshape(-1, 4)
    with np.errstate(over="ignore"):
        h = _mix64(np.full(len(cases), np.uint64(seed & 0xFFFFFFFFFFFFFFFF)) + _GOLDEN)
        for j in range(4):
            h = _mix64(h ^ (words[:, j] + _GOLDEN * np.uint64(j + 1)))
    return h


def _draws(keys: np.ndarray, start: int, m: int, n: int) -> np.ndarray:
    """Draws ``start .. start+m-1`` of each key's stream, as items in ``[0, n)``."""
    with np.errstate(over="ignore"):
        ctr = (np.arange(start, start + m, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        return (_mix64(keys[:, None] + ctr[None, :]) % np.uint64(n)).astype(np.int64)


def add_candidates(cases: Sequence[SequenceCase], inter: Interactions, n_candidates: int = 20, seed: int = 0,
                   exclude: str = "user") -> list[SequenceCase]:
    """Give each case ``n_candidates`` candidates: the target plus negatives, shuffled.

    ``exclude="user"``: negatives are items the user never interacted with in ``inter`` (pass the
    whole dataset, not a split). ``exclude="history"``: only the case's history and target are
    excluded (LLaRA/S-DPO). Negatives are the first distinct allowed items of the case's own
    random stream (keyed by :func:`case_keys`); the target goes to a uniform random position.
    Vectorized over cases: ~1 s per 100k cases.
    """
    if n_candidates < 1:
        raise ConfigError("n_candidates must be >= 1", where="n_candidates", fix="S-DPO uses 20")
    if exclude not in ("user", "history"):
        raise ConfigError(f"unknown exclude {exclude!r}", where="exclude", fix="use 'user' or 'history'")
    if not cases:
        return []
    n, k, n_items = len(cases), n_candidates - 1, inter.n_items
    keys = case_keys(cases, seed)
    width = 1 + max(len(c.history) for c in cases)
    own = np.asarray([(c.target, *c.history) + (-1,) * (width - 1 - len(c.history)) for c in cases],
                     dtype=np.int64)  # each case's target + history, padded with -1
    row_user = np.asarray([c.user for c in cases], dtype=np.int64)
    seen = _UserItems(inter, row_user) if exclude == "user" else None
    for i in np.flatnonzero(n_items - (width + (seen.count(row_user) if seen else 0)) < k):
        free = _free_items(cases[int(i)], inter, exclude)  # maybe too few items left: count exactly
        if free < k:
            raise DataError(f"user {cases[int(i)].user} leaves only {free} items to sample {k} negatives from",
                            where="add_candidates", fix="use fewer candidates or a larger catalog")
    negs = np.full((n, k), -1, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    start, m = 0, k + 8
    while todo.size:
        d = _draws(keys[todo], start, m, n_items)  # (t, m) candidate draws
        bad = (d[:, :, None] == own[todo][:, None, :]).any(axis=2)
        bad |= (d[:, :, None] == negs[todo][:, None, :]).any(axis=2)  # already chosen
        if seen is not None:
            bad |= seen.contains(row_user[todo], d)
        # repeated within this round: keep the first occurrence in draw order
        o = np.argsort(d, axis=1, kind="stable")
        ds = np.take_along_axis(d, o, axis=1)
        rep = np.zeros_like(bad)
        np.put_along_axis(rep, o[:, 1:], ds[:, 1:] == ds[:, :-1], axis=1)
        ok = ~bad & ~rep
        rank = np.cumsum(ok, axis=1) - 1 + filled[todo][:, None]
        take = ok & (rank < k)
        r_i, c_i = np.nonzero(take)
        negs[todo[r_i], rank[r_i, c_i]] = d[r_i, c_i]
        filled[todo] += take.sum(axis=1)
        todo = todo[filled[todo] < k]
        start += m
        m = min(2 * m, 4096)  # only dense users are left: draw more per round
    with np.errstate(over="ignore"):
        pos = (_mix64(keys ^ np.uint64(0xD6E8FEB86659FD93)) % np.uint64(n_candidates)).astype(np.int64)
    out = []
    for c, row, p in zip(cases, negs.tolist(), pos.tolist()):
        row.insert(p, c.target)
        out.append(SequenceCase(c.user, c.history, c.target, tuple(row), p, c.history_ratings, c.timestamp))
    return out


class _UserItems:
    """Fast "has user u interacted with item i?" for the users of a batch of cases: a dense
    bitmap when small enough, else binary search over sorted (user, item) keys."""

    def __init__(self, inter: Interactions, users: np.ndarray):
        self.n_items = inter.n_items
        self.counts = np.bincount(inter.user, minlength=max(inter.n_users, int(users.max()) + 1))
        self.users = np.unique(users)
        rows = np.isin(inter.user, self.users)
        u = np.searchsorted(self.users, inter.user[rows])
        if len(self.users) * self.n_items <= 50_000_000:
            self.bitmap = np.zeros((len(self.users), self.n_items), dtype=bool)
            self.bitmap[u, inter.item[rows]] = True
        else:
            self.bitmap = None
            self.keys = np.unique(u * self.n_items + inter.item[rows])

    def count(self, users: np.ndarray) -> np.ndarray:
        return self.counts[users]

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = np.searchsorted(self.users, users)[:, None]
        if self.bitmap is not None:
            return self.bitmap[u, items]
        if self.keys.size == 0:
            return np.zeros(items.shape, dtype=bool)
        q = u * self.n_items + items
        idx = np.minimum(np.searchsorted(self.keys, q), self.keys.size - 1)
        return self.keys[idx] == q


def _free_items(case: SequenceCase, inter: Interactions, exclude: str) -> int:
    items = set(case.history) | {case.target}
    if exclude == "user":
        items |= set(inter.item[inter.user == case.user].tolist())
    return inter.n_items - len(items)


class _Complement(CollectionSequence):
    """``[0, n)`` minus a few sorted excluded ids, indexable without building the list."""

    def __init__(self, n: int, excluded: Sequence[int]):
        self._ex = sorted(set(int(x) for x in excluded if 0 <= x < n))
        self._n = n - len(self._ex)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return [self[x] for x in range(*j.indices(self._n))]
        if j < 0:
            j += self._n
        if not 0 <= j < self._n:
            raise IndexError(j)
        ans = j
        for e in self._ex:
            if e <= ans:
                ans += 1
            else:
                break
        return ans


def sdpo_candidates(history: Sequence[int], target: int, n_items: int, n_candidates: int = 20) -> tuple[int, ...]:
    """S-DPO's exact candidate list: Python ``random`` seeded with the target id samples
    ``n_candidates - 1`` items from ``[0, n_items)`` minus history and target (in id order),
    appends the target and shuffles after re-seeding. A function of (history, target) only."""
    pool = _Complement(n_items, [*history, target])
    r = random.Random(target)
    cands = r.sample(pool, n_candidates - 1) + [target]
    r.seed(target)
    r.shuffle(cands)
    return tuple(cands)


def cases_from_llara(dataset: Dataset, split: str, n_candidates: int = 20, min_history: int = 3,
                     sampler: str = "sdpo", seed: int = 0) -> list[SequenceCase]:
    """Cases from the given LLaRA rows of ``split`` (``read_llara_lastfm``/``read_llara_movielens``).

    Rows with fewer than ``min_history`` history items are dropped (LLaRA keeps ``len_seq >= 3``).
    Negatives exclude only the row's history and target. ``sampler="sdpo"`` reproduces S-DPO's
    candidate lists exactly (:func:`sdpo_candidates`); ``"seeded"`` uses :func:`add_candidates`'s
    per-case seeding with ``seed``. ``user`` is the row's inferred user index in ``dataset.interactions``.
    """
    rows = getattr(dataset, "rows", {}).get(split)
    if rows is None:
        raise DataError(f"dataset {dataset.name!r} has no given sequence rows for split {split!r}",
                        where=dataset.name, fix="use a LLaRA dataset (llara-lastfm: train/val/test; llara-movielens: val/test)")
    if sampler not in ("sdpo", "seeded"):
        raise ConfigError(f"unknown sampler {sampler!r}", where="sampler", fix="use 'sdpo' or 'seeded'")
    offset = _user_offset(dataset, split)
    n_items = dataset.interactions.n_items
    cases = [SequenceCase(user=offset + r.user, history=r.history, target=r.next, candidates=(), target_pos=-1,
                          history_ratings=r.history_ratings, timestamp=float(len(r.history)))
             for r in rows if len(r.history) >= min_history]
    if sampler == "seeded":
        return add_candidates(cases, dataset.interactions, n_candidates, seed=seed, exclude="history")
    out = []
    for c in cases:
        cands = sdpo_candidates(c.history, c.target, n_items, n_candidates)
        out.append(replace(c, candidates=cands, target_pos=cands.index(c.target)))
    return out


def _user_offset(dataset: Dataset, split: str) -> int:
    """Readers number users split by split (train first); the split's first user index."""
    part = dataset.splits.get(split)
    return int(part.user.min()) if part is not None and len(part) else 0


def ml100k_lm_splits(dataset: Dataset, seed: int = 0, max_history: int = 10, min_history: int = 3,
                     n_candidates: int = 20) -> dict[str, list[SequenceCase]]:
    """MovieLens-100K train/val/test cases the LLaRA way: users split 8:1:1 (seeded), sliding
    windows of at most ``max_history`` items, windows with fewer than ``min_history`` dropped,
    20 candidates from items the user never rated."""
    from prefrec.data.splits import user_split

    parts = user_split(dataset.interactions, (0.8, 0.1, 0.1), seed=seed)
    out = {}
    for name, part in parts.items():
        cases = build_sequences(part, max_history=max_history, min_history=min_history)
        out[name] = add_candidates(cases, dataset.interactions, n_candidates, seed=seed)
    return out
