"""The one in-memory representation of interaction data.

Readers turn every source format into an :class:`Interactions` table (internal 0-based
contiguous user and item indices plus optional timestamp and rating) and an
:class:`ItemCatalog` (item index -> title and metadata). Everything downstream (splits,
samplers, CF and LM pipelines) works on these, so the LM and CF sides see the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prefrec.errors import DataError


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays of (user, item[, timestamp][, rating]) rows.

    ``user`` and ``item`` are internal indices in ``[0, n_users)`` / ``[0, n_items)``;
    ``user_ids`` / ``item_ids`` map them back to the source's ids (as strings).
    """

    user: np.ndarray
    item: np.ndarray
    n_users: int
    n_items: int
    timestamp: np.ndarray | None = None
    rating: np.ndarray | None = None
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "user", np.asarray(self.user, dtype=np.int64))
        object.__setattr__(self, "item", np.asarray(self.item, dtype=np.int64))
        n = len(self.user)
        if len(self.item) != n:
            raise DataError("user and item columns have different lengths", where=self.source)
        for name in ("timestamp", "rating"):
            col = getattr(self, name)
            if col is None:
                continue
            col = np.asarray(col, dtype=np.float64)
            if len(col) != n:
                raise DataError(f"{name} column has {len(col)} rows, expected {n}", where=self.source)
            bad = ~np.isfinite(col)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{name} is NaN or infinite in row {row + 1}", where=self.source,
                                fix=f"remove that row or give it a finite {name}")
            object.__setattr__(self, name, col)
        if n:
            if self.user.min() < 0 or self.user.max() >= self.n_users:
                raise DataError("user index out of range", where=self.source)
            if self.item.min() < 0 or self.item.max() >= self.n_items:
                raise DataError("item index out of range", where=self.source)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def has_time(self) -> bool:
        return self.timestamp is not None

    @property
    def has_rating(self) -> bool:
        return self.rating is not None

    def subset(self, mask_or_index: np.ndarray, source: str | None = None) -> Interactions:
        """Rows selected by a boolean mask or index array; the id space is kept."""
        idx = mask_or_index
        return Interactions(
            user=self.user[idx], item=self.item[idx], n_users=self.n_users, n_items=self.n_items,
            timestamp=None if self.timestamp is None else self.timestamp[idx],
            rating=None if self.rating is None else self.rating[idx],
            user_ids=self.user_ids, item_ids=self.item_ids, source=source or self.source,
        )

    def user_items(self) -> list[np.ndarray]:
        """Per-user item arrays (in row order; sort by time first for sequences)."""
        order = np.argsort(self.user, kind="stable")
        counts = np.bincount(self.user, minlength=self.n_users)
        return np.split(self.item[order], np.cumsum(counts)[:-1])

    def csr(self):
        """User x item binary matrix as ``scipy.sparse.csr_matrix`` (duplicates collapsed)."""
        import scipy.sparse as sp

        m = sp.csr_matrix((np.ones(len(self), dtype=np.float32), (self.user, self.item)),
                          shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


@dataclass
class ItemCatalog:
    """Item index -> title (and optional metadata such as genres)."""

    titles: list[str]
    meta: dict[str, list[Any]] = field(default_factory=dict)
    source: str = "<memory>"
    _index: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.titles)

    def title(self, item: int) -> str:
        return self.titles[int(item)]

    def index_of(self, title: str, where: str | None = None) -> int:
        """Item index of a title; a clear error if the title is not in the catalog."""
        if self._index is None:
            self._index = {}
            for i, t in enumerate(self.titles):
                self._index.setdefault(t, i)
        try:
            return self._index[title]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(title, self._index.keys(), n=1)
            hint = f" (closest: {close[0]!r})" if close else ""
            raise DataError(f"item {title!r} is not in the catalog{hint}", where=where or self.source,
                            fix="add the item to the catalog or correct its spelling") from None


@dataclass
class Dataset:
    """A named dataset: all interactions, an optional catalog and optional predefined splits."""

    name: str
    interactions: Interactions
    catalog: ItemCatalog | None = None
    splits: dict[str, Interactions] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        """Summary numbers printed by ``prefrec data stats``."""
        x = self.interactions
        n = len(x)
        users_seen = np.unique(x.user).size
        items_seen = np.unique(x.item).size
        per_user = np.bincount(x.user, minlength=x.n_users)
        per_user = per_user[per_user > 0]
        out: dict[str, Any] = {
            "dataset": self.name,
            "users": int(users_seen),
            "items": int(items_seen),
            "interactions": int(n),
            "density": float(n / max(users_seen * items_seen, 1)),
            "history_length": _quantiles(per_user),
        }
        if x.rating is not None:
            vals, counts = np.unique(x.rating, return_counts=True)
            out["rating_range"] = [float(x.rating.min()), float(x.rating.max())]
            if len(vals) <= 20:
                out["rating_counts"] = {f"{v:g}": int(c) for v, c in zip(vals, counts)}
        if x.timestamp is not None:
            out["time_range"] = [float(x.timestamp.min()), float(x.timestamp.max())]
        for name, part in self.splits.items():
            out[f"split/{name}"] = len(part)
        return out


def _quantiles(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {}
    q = np.percentile(a, [0, 25, 50, 75, 100])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": float(q[4]), "mean": float(a.mean())}


def index_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to contiguous 0-based indices in order of first appearance... sorted.

    Returns (indices, unique_ids) where ``unique_ids[indices] == raw``.
    """
    uniq, inv = np.unique(raw, return_inverse=True)
    return inv.astype(np.int64), uniq
