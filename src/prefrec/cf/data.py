"""User-item sets (CSR) and the CF splits: validation holdout, random train/test, false negatives.

All functions are deterministic given a seed (numpy ``default_rng``). Notation: ``n_u`` is the
number of *distinct* training items of user ``u`` (duplicate (u, i) rows are collapsed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefrec.errors import DataError


@dataclass(frozen=True)
class UserItems:
    """Per-user sorted distinct item sets in CSR form: items of ``u`` are
    ``indices[indptr[u]:indptr[u+1]]`` (ascending)."""

    indptr: np.ndarray
    indices: np.ndarray
    n_users: int
    n_items: int

    @classmethod
    def from_pairs(cls, user, item, n_users: int, n_items: int) -> UserItems:
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        keys = np.unique(user * n_items + item)  # dedups and sorts by (user, item)
        u, i = keys // n_items, keys % n_items
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
        return cls(indptr, i, n_users, n_items)

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def users(self) -> np.ndarray:
        """User of each stored pair (parallel to ``indices``)."""
        return np.repeat(np.arange(self.n_users), self.counts)

    def __len__(self) -> int:
        return int(self.indptr[-1])

    def items_of(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u]:self.indptr[u + 1]]

    def item_counts(self) -> np.ndarray:
        """Number of users per item (item popularity)."""
        return np.bincount(self.indices, minlength=self.n_items)


def _split_random_per_user(ui: UserItems, take: np.ndarray, rng: np.random.Generator
                           ) -> tuple[UserItems, UserItems]:
    """Move ``take[u]`` uniformly random items of each user ``u`` out of ``ui``: ``(kept, moved)``.

    One random key per stored pair, then each pair's rank within its user (sort by (user, key));
    the pairs ranked below ``take[u]`` move. One vectorised pass, no per-user Python loop.
    """
    n = ui.counts
    order = np.lexsort((rng.random(len(ui)), ui.users))
    rank = np.empty(len(ui), dtype=np.int64)
    rank[order] = np.arange(len(ui)) - np.repeat(ui.indptr[:-1], n)
    moved = rank < np.repeat(take, n)
    u = ui.users
    return (UserItems.from_pairs(u[~moved], ui.indices[~moved], ui.n_users, ui.n_items),
            UserItems.from_pairs(u[moved], ui.indices[moved], ui.n_users, ui.n_items))


def holdout_per_user(ui: UserItems, fraction: float, seed: int) -> tuple[UserItems, UserItems]:
    """Move ``max(floor(fraction * n_u), 1)`` random items of every user into a holdout.

    IR-Benchmark's validation split (dataset.py). One deliberate difference, documented: a user
    with a single training item keeps it in training (the peer would leave them with none).
    Returns ``(kept, held_out)``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"holdout fraction {fraction} must be in (0, 1)", where="data.valid_fraction",
                        fix="use 0.1 (the paper's validation fraction)")
    n = ui.counts
    take = np.where(n >= 2, np.maximum(np.floor(fraction * n).astype(np.int64), 1), 0)
    return _split_random_per_user(ui, take, np.random.default_rng(seed))


def random_split(user, item, n_users: int, n_items: int, test_fraction: float, seed: int
                 ) -> tuple[UserItems, UserItems]:
    """Per-user random train/test split of raw interactions (used for raw ml-100k).

    Local stand-in for ``prefrec.data.splits`` (not present when this was written): each user's
    distinct items are shuffled with ``seed`` and ``floor(test_fraction * n_u)`` go to test, like
    IR-Benchmark's IID construction (80/20 per user).
    """
    ui = UserItems.from_pairs(user, item, n_users, n_items)
    take = np.floor(test_fraction * ui.counts).astype(np.int64)
    return _split_random_per_user(ui, take, np.random.default_rng(seed))


def false_negative_split(train: UserItems, fraction: float, seed: int) -> tuple[UserItems, UserItems]:
    """The false-negative (noise) setting, our documented version of PSL paper Sec. 5.2 / B.1.

    Per user, ``round(fraction * n_u)`` random training items become *false negatives*: they are
    removed from the training positives (so they are neither trained on as positives nor masked
    at evaluation) and the negative sampler draws from them with probability ``p`` per slot
    (see :class:`prefrec.cf.sampling.NegativeSampler`). Users keep at least one positive.
    Returns ``(train_without_fn, false_negatives)``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"false-negative fraction {fraction} must be in (0, 1)", where="data.noise_fraction",
                        fix="use 0.1 (the paper's 10%)")
    n = train.counts
    take = np.minimum(np.round(fraction * n).astype(np.int64), np.maximum(n - 1, 0))
    return _split_random_per_user(train, take, np.random.default_rng(seed + 7919))
