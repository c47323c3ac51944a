"""Golden tests for HR@K / NDCG@K / MRR over candidate lists, ties and NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrec.errors import DataError
from prefrec.metrics.candidates import candidate_metrics, hr_at_k, mrr, ndcg_at_k, target_ranks


def test_ranks_golden():
    s = np.array([[0.1, 0.9, 0.5],     # target 1 -> rank 1
                  [0.1, 0.9, 0.5],     # target 0 -> rank 3
                  [0.3, 0.3, 0.3],     # constant scorer, target 1
                  [0.2, 0.7, 0.7]])    # tie between target 2 and index 1
    t = [1, 0, 1, 2]
    assert target_ranks(s, t).tolist() == [1, 3, 3, 2]                 # pessimistic
    assert target_ranks(s, t, ties="index").tolist() == [1, 3, 2, 2]


def test_metrics_golden():
    r = np.array([1, 2, 6, 11])
    assert hr_at_k(r, 1) == 0.25 and hr_at_k(r, 5) == 0.5 and hr_at_k(r, 10) == 0.75
    assert ndcg_at_k(r, 5) == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert ndcg_at_k(r, 10) == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)
    assert mrr(r) == pytest.approx((1 + 1 / 2 + 1 / 6 + 1 / 11) / 4)


def test_candidate_metrics_dict_and_torch():
    torch = pytest.importorskip("torch")
    s = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    m = candidate_metrics(s, torch.tensor([0, 0]), ks=(1, 2))
    assert m == {"HR@1": 0.5, "NDCG@1": 0.5, "HR@2": 0.5, "NDCG@2": 0.5,
                 "MRR": pytest.approx((1 + 1 / 3) / 2), "n": 2}


def test_nan_scores_rank_last():
    s = np.array([[np.nan, 1.0, 2.0], [0.0, np.nan, 2.0]])
    assert target_ranks(s, [0, 2]).tolist() == [3, 1]
    assert target_ranks(s, [0, 2], ties="index").tolist() == [3, 1]


def test_errors():
    with pytest.raises(DataError, match="matrix"):
        target_ranks([1.0, 2.0], [0])
    with pytest.raises(DataError, match="targets"):
        target_ranks([[1.0, 2.0]], [0, 1])
    with pytest.raises(DataError, match="outside"):
        target_ranks([[1.0, 2.0]], [2])
