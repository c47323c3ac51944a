"""Batched full-ranking evaluator: golden case, parity with the naive per-user loop."""

import numpy as np
import pytest
import torch

from prefrec.cf.data import UserItems
from prefrec.cf.evaluate import evaluate_full, evaluate_naive
from prefrec.errors import ConfigError
from prefrec.metrics.ranking import popularity_groups


def test_golden_two_users():
    # 1-d embeddings: scores are item values times the user's sign.
    items = torch.tensor([[4.0], [3.0], [2.0], [1.0], [0.0]])
    users = torch.tensor([[1.0], [1.0], [1.0]])
    train = UserItems.from_pairs([0, 1], [0, 1], 3, 5)    # masked: u0 item 0, u1 item 1
    truth = UserItems.from_pairs([0, 0, 1], [2, 4, 0], 3, 5)  # u2 has no ground truth
    # u0 ranking: 1,2,3,4 -> hits at p=2 (item 2) and p=4 (item 4); u1 ranking: 0,2,3,4 -> hit at p=1.
    m = evaluate_full(users, items, train, truth, ks=(1, 2, 4), chunk=2)
    l3 = 1 / np.log2(3)
    assert m["Recall@1"] == pytest.approx((0 + 1) / 3)
    assert m["Recall@2"] == pytest.approx((0.5 + 1) / 3)
    assert m["Recall@4"] == pytest.approx((1 + 1) / 3)
    assert m["NDCG@2"] == pytest.approx((l3 / (1 + l3) + 1) / 3)
    assert m["NDCG@4"] == pytest.approx(((l3 + 1 / np.log2(5)) / (1 + l3) + 1) / 3)
    w = evaluate_full(users, items, train, truth, ks=(2,), denominator="with_truth")
    assert w["Recall@2"] == pytest.approx((0.5 + 1) / 2)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_batched_equals_naive(chunk):
    g = torch.Generator().manual_seed(0)
    n_u, n_i = 40, 90
    U, I = torch.randn(n_u, 8, generator=g), torch.randn(n_i, 8, generator=g)
    rng = np.random.default_rng(0)
    m = rng.random((n_u, n_i))
    tu, ti = np.nonzero(m < 0.15)
    vu, vi = np.nonzero((m >= 0.15) & (m < 0.25))
    keep = vu != 3  # user 3 has no ground truth
    train = UserItems.from_pairs(tu, ti, n_u, n_i)
    truth = UserItems.from_pairs(vu[keep], vi[keep], n_u, n_i)
    for den in ("all", "with_truth"):
        a = evaluate_full(U, I, train, truth, ks=(5, 10, 20, 50), chunk=chunk, denominator=den)
        b = evaluate_naive(U, I, train, truth, ks=(5, 10, 20, 50), denominator=den)
        for k in b:
            assert a[k] == pytest.approx(b[k], abs=1e-9), k


def test_popularity_group_recall_sums_to_recall():
    g = torch.Generator().manual_seed(1)
    U, I = torch.randn(30, 4, generator=g), torch.randn(60, 4, generator=g)
    rng = np.random.default_rng(1)
    tu, ti = np.nonzero(rng.random((30, 60)) < 0.2)
    vu, vi = np.nonzero(rng.random((30, 60)) < 0.05)
    train, truth = UserItems.from_pairs(tu, ti, 30, 60), UserItems.from_pairs(vu, vi, 30, 60)
    groups = popularity_groups(train.item_counts(), 3)
    m = evaluate_full(U, I, train, truth, ks=(20,), item_groups=groups)
    tg = np.bincount(groups[truth.indices], minlength=3)
    # micro recall over all pairs = sum_g recall_g * share_g
    micro = sum(m[f"Recall@20/pop{k}"] * tg[k] for k in range(3) if tg[k]) / tg.sum()
    S = (U @ I.T).numpy()
    hits = 0
    for u in range(30):
        s = S[u].copy()
        s[train.items_of(u)] = -np.inf
        hits += np.isin(np.argsort(-s)[:20], truth.items_of(u)).sum()
    assert micro == pytest.approx(hits / len(truth))


def test_bad_cutoffs():
    U, I = torch.randn(2, 3), torch.randn(4, 3)
    ui = UserItems.from_pairs([0], [1], 2, 4)
    with pytest.raises(ConfigError):
        evaluate_full(U, I, ui, ui, ks=(5,))
