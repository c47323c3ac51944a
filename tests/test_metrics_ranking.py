"""Ranking metrics: golden hand-computed values and the denominator option."""

import math

import numpy as np
import pytest

from prefrec.metrics import ranking as R

HITS = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
NT = np.array([2, 0, 3])
L3 = 1 / math.log2(3)


def test_recall_golden():
    np.testing.assert_allclose(R.recall_at_k(HITS, NT, 2), [0.5, 0.0, 1 / 3])
    np.testing.assert_allclose(R.recall_at_k(HITS, NT, 4), [1.0, 0.0, 1 / 3])


def test_ndcg_golden():
    np.testing.assert_allclose(R.ndcg_at_k(HITS, NT, 2), [1 / (1 + L3), 0.0, L3 / (1 + L3)])
    np.testing.assert_allclose(R.ndcg_at_k(HITS, NT, 4), [1.5 / (1 + L3), 0.0, L3 / (1 + L3 + 0.5)])
    # A perfect list scores 1 even when |GT| > K (ideal DCG truncates at min(K, |GT|)).
    assert R.ndcg_at_k(np.ones((1, 3), bool), [10], 3)[0] == pytest.approx(1.0)


def test_precision_hit_rate():
    np.testing.assert_allclose(R.precision_at_k(HITS, NT, 2), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(R.hit_rate_at_k(HITS, NT, 1), [1.0, 0.0, 0.0])


def test_denominator_option():
    rec = R.recall_at_k(HITS, NT, 2)
    assert R.mean_over_users(rec, NT, "all") == pytest.approx((0.5 + 1 / 3) / 3)
    assert R.mean_over_users(rec, NT, "with_truth") == pytest.approx((0.5 + 1 / 3) / 2)
    m = R.ranking_metrics(HITS, NT, ks=(2, 4))
    assert set(m) == {"Recall@2", "NDCG@2", "Recall@4", "NDCG@4"}
    assert m["Recall@4"] == pytest.approx((1 + 1 / 3) / 3)
    with pytest.raises(ValueError):
        R.mean_over_users(rec, NT, "some")


def test_bad_shapes():
    with pytest.raises(ValueError):
        R.recall_at_k(HITS, NT, 5)
    with pytest.raises(ValueError):
        R.ndcg_at_k(HITS, NT[:2], 2)


def test_popularity_groups_and_group_recall():
    g = R.popularity_groups(np.array([5, 0, 9, 1, 3, 7]), 3)
    np.testing.assert_array_equal(g, [1, 0, 2, 0, 1, 2])
    rec = R.group_recall(np.array([0, 2, 2]), np.array([0, 0, 2, 2, 2, 2]), 3)
    np.testing.assert_allclose(rec[[0, 2]], [0.5, 0.5])
    assert math.isnan(rec[1])
