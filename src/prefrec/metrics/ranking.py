"""Top-K ranking metrics from a hit matrix: Recall@K, NDCG@K, Precision@K, HitRate@K.

Definitions (PSL paper Sec. 5 / IR-Benchmark ``itemrec/metrics/metrics.py``, research §3):

- ``hits[u, p]`` is True when the item ranked at position ``p + 1`` for user ``u`` is relevant
  (in ``u``'s ground truth); rankings exclude the user's training items.
- ``Recall@K(u) = |hits in top K| / |GT(u)|``, and 0 when ``GT(u)`` is empty.
- ``NDCG@K(u) = sum_{p<=K, hit} 1/log2(p+1) / sum_{p=1}^{min(K,|GT(u)|)} 1/log2(p+1)``, 0 when
  ``GT(u)`` is empty (the ideal DCG truncates at min(K, |GT|), so a perfect list scores 1).
- ``Precision@K(u) = |hits in top K| / K``; ``HitRate@K(u) = 1[any hit in top K]``.
- The reported value is the **mean over users**. ``denominator="all"`` divides by every user,
  including users without ground truth (the peer's choice; it matters for OOD where 3-6% of users
  have no test item). ``denominator="with_truth"`` divides by users with a non-empty ground truth.

Everything works on torch tensors or numpy arrays and returns float64 numpy arrays / floats.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Denominator = Literal["all", "with_truth"]
DENOMINATORS = ("all", "with_truth")


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(hits: np.ndarray, n_truth: np.ndarray, k: int) -> None:
    if hits.ndim != 2:
        raise ValueError(f"hits must be (users, positions); got shape {hits.shape}")
    if n_truth.shape != (hits.shape[0],):
        raise ValueError(f"n_truth must be ({hits.shape[0]},); got {n_truth.shape}")
    if not 1 <= k <= hits.shape[1]:
        raise ValueError(f"k={k} must be in 1..{hits.shape[1]} (the number of ranked positions)")


def discounts(k: int) -> np.ndarray:
    """``1/log2(p+1)`` for positions p = 1..k (the DCG gain of a hit at position p)."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def recall_at_k(hits, n_truth, k: int) -> np.ndarray:
    """Per-user Recall@K = hits in the top K / |GT(u)| (0 for users without ground truth)."""
    h, n = _np(hits).astype(bool), _np(n_truth).astype(np.float64)
    _check(h, n, k)
    got = h[:, :k].sum(1).astype(np.float64)
    return np.divide(got, n, out=np.zeros_like(got), where=n > 0)


def precision_at_k(hits, n_truth, k: int) -> np.ndarray:
    """Per-user Precision@K = hits in the top K / K."""
    h, n = _np(hits).astype(bool), _np(n_truth)
    _check(h, n, k)
    return h[:, :k].sum(1) / float(k)


def hit_rate_at_k(hits, n_truth, k: int) -> np.ndarray:
    """Per-user HitRate@K = 1 if any relevant item is in the top K."""
    h, n = _np(hits).astype(bool), _np(n_truth)
    _check(h, n, k)
    return h[:, :k].any(1).astype(np.float64)


def ndcg_at_k(hits, n_truth, k: int) -> np.ndarray:
    """Per-user NDCG@K with binary gains and the ideal DCG over ``min(K, |GT(u)|)`` positions."""
    h, n = _np(hits).astype(bool), _np(n_truth).astype(np.int64)
    _check(h, n, k)
    disc = discounts(k)
    dcg = (h[:, :k] * disc).sum(1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal_cum[np.minimum(n, k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def mean_over_users(per_user, n_truth, denominator: Denominator = "all") -> float:
    """Average a per-user metric; ``denominator`` says which users count (see module doc)."""
    v, n = _np(per_user).astype(np.float64), _np(n_truth)
    if denominator == "all":
        return float(v.sum() / max(len(v), 1))
    if denominator == "with_truth":
        m = n > 0
        return float(v[m].sum() / max(int(m.sum()), 1))
    raise ValueError(f"denominator must be one of {DENOMINATORS}, got {denominator!r}")


def ranking_metrics(hits, n_truth, ks: Sequence[int] = (5, 10, 20, 50),
                    denominator: Denominator = "all") -> dict[str, float]:
    """``{"Recall@K": ..., "NDCG@K": ...}`` for every K, averaged over users."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"Recall@{k}"] = mean_over_users(recall_at_k(hits, n_truth, k), n_truth, denominator)
        out[f"NDCG@{k}"] = mean_over_users(ndcg_at_k(hits, n_truth, k), n_truth, denominator)
    return out


def sums_for(hits, n_truth, ks: Sequence[int]) -> dict[str, float]:
    """Unnormalised per-metric sums over a chunk of users (the batched evaluator adds these up)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"Recall@{k}"] = float(recall_at_k(hits, n_truth, k).sum())
        out[f"NDCG@{k}"] = float(ndcg_at_k(hits, n_truth, k).sum())
    return out


def popularity_groups(train_counts, n_groups: int = 3) -> np.ndarray:
    """Item -> popularity group 0..n_groups-1 (0 = least popular), equal-size groups of items
    sorted by training interaction count (ties broken by item index, so it is deterministic)."""
    c = _np(train_counts)
    order = np.lexsort((np.arange(len(c)), c))
    groups = np.empty(len(c), dtype=np.int64)
    groups[order] = np.arange(len(c)) * n_groups // max(len(c), 1)
    return groups


def group_recall(hit_items_group, truth_items_group, n_groups: int) -> np.ndarray:
    """Micro Recall@K per item group: ``sum_u |topK(u) ∩ GT(u) ∩ G| / sum_u |GT(u) ∩ G|``.

    ``hit_items_group``: group ids of every hit (relevant item found in a top K), flattened over
    users; ``truth_items_group``: group ids of every ground-truth item. NaN for an empty group.
    """
    h = np.bincount(_np(hit_items_group).astype(np.int64), minlength=n_groups).astype(np.float64)
    t = np.bincount(_np(truth_items_group).astype(np.int64), minlength=n_groups).astype(np.float64)
    return np.divide(h, t, out=np.full(n_groups, np.nan), where=t > 0)
