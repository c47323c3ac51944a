"""Full-ranking evaluation (all items, training items masked), batched over users.

One pass per chunk of users: scores ``(chunk, |I|)`` = one matmul, training items set to -inf,
``topk(max K)`` once, then Recall/NDCG at every K from the same hit matrix. Memory is
O(chunk × |I|): the full users × items matrix (Gowalla: 29,858 × 40,988) is never built.
Protocol (research §3): users with no ground truth count as zeros (``denominator="all"``),
only the *training* split is masked (validation items are not masked at test time, as the peer).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from prefrec.cf.data import UserItems
from prefrec.errors import ConfigError
from prefrec.metrics import ranking


def _rows(ui: UserItems, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row-in-chunk, item) pairs of users start..stop-1."""
    a, b = int(ui.indptr[start]), int(ui.indptr[stop])
    rows = np.repeat(np.arange(stop - start), ui.counts[start:stop])
    return torch.from_numpy(rows), torch.from_numpy(ui.indices[a:b])


_BLOCK = 64
_BLOCKED_MIN_ITEMS = 4096


def _topk_indices(scores: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Column indices of each row's top ``k`` scores, best first (``torch.topk`` semantics).

    Blocked (``block > 0``, width a multiple of ``block``): the row maxima of ``block``-wide
    column blocks are computed in one pass; the ``k`` blocks with the largest maxima hold the top
    ``k`` (every other item is <= the k-th largest block maximum, and those k maxima are k items
    at least that large), so the exact top-k is taken among ``k * block`` candidates instead of
    all |I| columns. Ties may be broken differently from a full ``topk`` (which is unspecified
    anyway). Tested against the plain path and the naive evaluator.
    """
    n = scores.shape[1]
    if not block or n // block <= k:
        return torch.topk(scores, k, dim=1, sorted=True).indices
    rows = scores.shape[0]
    bmax = scores.view(rows, n // block, block).amax(2)
    blk = torch.topk(bmax, k, dim=1, sorted=False).indices
    cols = (blk.unsqueeze(2) * block + torch.arange(block)).view(rows, k * block)
    cand = scores.gather(1, cols)
    best = torch.topk(cand, k, dim=1, sorted=True).indices
    return cols.gather(1, best)


@torch.no_grad()
def evaluate_full(user_emb: torch.Tensor, item_emb: torch.Tensor, train: UserItems, truth: UserItems,
                  ks: Sequence[int] = (5, 10, 20, 50), chunk: int = 1024, denominator: str = "all",
                  item_groups: np.ndarray | None = None, group_k: int = 20) -> dict[str, float]:
    """Recall@K and NDCG@K for every K in ``ks`` over all ``n_users`` users.

    ``user_emb`` (U, d) / ``item_emb`` (I, d) are the model's final embeddings (ranking by dot
    product; with ``norm`` that is cosine). ``item_groups`` (I,) optional group id per item (e.g.
    :func:`prefrec.metrics.ranking.popularity_groups`) adds micro ``Recall@{group_k}/pop{g}``.
    """
    ks = sorted(set(int(k) for k in ks))
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    if not ks or ks[0] < 1 or ks[-1] > n_items:
        raise ConfigError(f"cutoffs {ks} must lie in 1..{n_items} (the number of items)", where="train.ks",
                          fix="use e.g. [5, 10, 20, 50]")
    if denominator not in ranking.DENOMINATORS:
        raise ConfigError(f"unknown denominator {denominator!r}", where="data.denominator",
                          fix=f"use one of {ranking.DENOMINATORS}")
    kmax = ks[-1]
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("Recall", "NDCG")}
    n_truth_all = truth.counts
    n_groups = 0 if item_groups is None else int(item_groups.max()) + 1
    group_hits: list[np.ndarray] = []
    # Items padded to whole blocks (zero rows scored -inf) for the blocked top-k; one reusable
    # score buffer (a fresh 1024 x |I| tensor per chunk costs its page faults every time).
    block = _BLOCK if n_items >= _BLOCKED_MIN_ITEMS else 0
    n_cols = n_items if not block else -(-n_items // block) * block
    items = item_emb
    if n_cols > n_items:
        items = torch.cat([item_emb, item_emb.new_zeros(n_cols - n_items, item_emb.shape[1])])
    buf = torch.empty(min(chunk, n_users), n_cols, dtype=torch.result_type(user_emb, item_emb))
    truth_keys = torch.from_numpy(truth.users * n_items + truth.indices)
    for s in range(0, n_users, chunk):
        e = min(s + chunk, n_users)
        scores = buf[:e - s]
        torch.mm(user_emb[s:e], items.T, out=scores)
        if n_cols > n_items:
            scores[:, n_items:] = -torch.inf
        r, c = _rows(train, s, e)
        scores[r, c] = -torch.inf
        top = _topk_indices(scores, kmax, block)
        # hits: is (user, item) a ground-truth pair? one search in this chunk's sorted keys
        keys = truth_keys[int(truth.indptr[s]):int(truth.indptr[e])]
        q = (torch.arange(s, e).unsqueeze(1) * n_items + top).contiguous()
        if len(keys):
            at = torch.searchsorted(keys, q).clamp_max(len(keys) - 1)
            hits = (keys[at] == q).numpy()
        else:
            hits = np.zeros(q.shape, dtype=bool)
        n_truth = n_truth_all[s:e]
        for key, v in ranking.sums_for(hits, n_truth, ks).items():
            sums[key] += v
        if n_groups:
            group_hits.append(item_groups[top[:, :group_k].numpy()[hits[:, :group_k]]])
    if denominator == "all":
        denom = n_users
    else:
        denom = int((n_truth_all > 0).sum())
    out = {k: v / max(denom, 1) for k, v in sums.items()}
    if n_groups:
        g = ranking.group_recall(np.concatenate(group_hits) if group_hits else np.zeros(0, np.int64),
                                 item_groups[truth.indices], n_groups)
        for i, v in enumerate(g):
            out[f"Recall@{group_k}/pop{i}"] = float(v)
    return out


def evaluate_naive(user_emb: torch.Tensor, item_emb: torch.Tensor, train: UserItems, truth: UserItems,
                   ks: Sequence[int] = (5, 10, 20, 50), denominator: str = "all") -> dict[str, float]:
    """Slow obvious reference: one user at a time, numpy argsort, sets. For parity tests only."""
    ks = sorted(ks)
    S = (user_emb @ item_emb.T).numpy()
    tot = {f"{m}@{k}": 0.0 for k in ks for m in ("Recall", "NDCG")}
    counted = 0
    for u in range(S.shape[0]):
        gt = set(truth.items_of(u).tolist())
        if gt or denominator == "all":
            counted += 1
        if not gt:
            continue
        s = S[u].copy()
        s[train.items_of(u)] = -np.inf
        order = np.argsort(-s, kind="stable")
        for k in ks:
            top = order[:k]
            h = [int(i) in gt for i in top]
            tot[f"Recall@{k}"] += sum(h) / len(gt)
            dcg = sum(1 / np.log2(p + 2) for p, x in enumerate(h) if x)
            idcg = sum(1 / np.log2(p + 2) for p in range(min(k, len(gt))))
            tot[f"NDCG@{k}"] += dcg / idcg
    return {k: v / max(counted, 1) for k, v in tot.items()}
