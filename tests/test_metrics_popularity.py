"""Golden tests for prefrec.metrics.popularity (values computed by hand in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefrec.errors import DataError
from prefrec.metrics.popularity import HEAD, MID, TAIL, popularity_groups, popularity_report

# 10 items, counts chosen with ties at both boundaries.
#   item:   0  1  2  3  4  5  6  7  8  9
COUNTS = [50, 40, 40, 10, 9, 5, 5, 1, 0, 0]


def test_groups_by_hand():
    # above(i) = share of items with a strictly larger count:
    # item0 0.0, items1,2 0.1, item3 0.3, item4 0.4, items5,6 0.5, item7 0.7, items8,9 0.8
    # head: above < 0.2 -> 0,1,2 (3 items: tie at the 20% boundary goes to head)
    # tail: above >= 0.5 -> 5,6,7,8,9 ; mid: 3,4
    g = popularity_groups(COUNTS)
    assert g.tolist() == [HEAD, HEAD, HEAD, MID, MID, TAIL, TAIL, TAIL, TAIL, TAIL]


def test_groups_tie_across_tail_boundary_goes_to_mid():
    # bottom 50% by position = items 2,3, but item 2 ties with item 1 -> both mid.
    g = popularity_groups([9, 2, 2, 1])
    # above: item0 0.0 (head), items1,2 0.25 (mid: not < 0.2, not >= 0.5), item3 0.75 (tail)
    assert g.tolist() == [HEAD, MID, MID, TAIL]


def test_all_equal_counts_are_head():
    # Nobody is strictly more popular than anyone: everything ties into head.
    assert popularity_groups([3, 3, 3, 3]).tolist() == [HEAD] * 4


def test_report_top1_by_hand():
    # 5 cases; case 3 is an invalid LM answer (None).
    rec = [0, 5, 1, None, 3]
    tgt = [0, 5, 2, 8, 4]
    r = popularity_report(rec, tgt, COUNTS)
    assert r["cases"] == 5
    assert r["ValidRatio"] == pytest.approx(4 / 5)
    # valid recommended: 0(head) 5(tail) 1(head) 3(mid) -> head 2/4, tail 1/4
    assert r["HeadShare@1"] == pytest.approx(0.5)
    assert r["TailShare@1"] == pytest.approx(0.25)
    # AvgPop@1 = (50 + 5 + 40 + 10) / 4 = 26.25 ; targets: (50 + 5 + 40 + 0 + 9) / 5 = 20.8
    assert r["AvgPop@1"] == pytest.approx(26.25)
    assert r["AvgPop/target"] == pytest.approx(20.8)
    assert r["PopLift@1"] == pytest.approx(26.25 / 20.8)
    # targets' groups: 0 head, 5 tail, 2 head, 8 tail, 4 mid -> head 2/5
    assert r["TargetHeadShare"] == pytest.approx(0.4)
    assert r["Coverage@1"] == pytest.approx(4 / 10)
    # hits: case0 yes (head), case1 yes (tail), case2 no (head), case3 invalid=miss (tail), case4 no (mid)
    assert r["HR@1/head"] == pytest.approx(0.5)
    assert r["HR@1/tail"] == pytest.approx(0.5)
    assert r["HR@1/mid"] == pytest.approx(0.0)
    assert (r["cases/head"], r["cases/mid"], r["cases/tail"]) == (2, 1, 2)
    assert (r["items/head"], r["items/mid"], r["items/tail"]) == (3, 2, 5)


def test_report_topk_lists_and_minus_one():
    rec = np.array([[1, 0], [7, -1], [-1, -1]])
    tgt = [0, 9, 7]
    r = popularity_report(rec, tgt, COUNTS)
    assert r["ValidRatio"] == pytest.approx(2 / 3)
    # valid entries: 1(head) 0(head) 7(tail) -> head 2/3 ; avg pop (40+50+1)/3
    assert r["HeadShare@2"] == pytest.approx(2 / 3)
    assert r["AvgPop@2"] == pytest.approx(91 / 3)
    assert r["Coverage@2"] == pytest.approx(0.3)
    # HR@1: none; HR@2: case0 (target 0 at slot 2, head group)
    assert r["HR@1/head"] == 0.0 and r["HR@2/head"] == 1.0
    assert r["HR@2/tail"] == 0.0  # cases 1 (target 9) and 2 (target 7, invalid answer)
    assert math.isnan(r["HR@1/mid"])  # no case with a mid target: nothing measured


def test_all_invalid_gives_nan_not_zero():
    r = popularity_report([None, None], [0, 1], COUNTS)
    assert r["ValidRatio"] == 0.0
    assert math.isnan(r["HeadShare@1"]) and math.isnan(r["AvgPop@1"])
    assert r["HR@1/head"] == 0.0


def test_errors_are_clear():
    with pytest.raises(DataError, match="outside"):
        popularity_report([12], [0], COUNTS)
    with pytest.raises(DataError, match="targets"):
        popularity_report([0, 1], [0], COUNTS)
    with pytest.raises(DataError, match="fractions"):
        popularity_groups(COUNTS, head=0.6, tail=0.5)


def test_popular_ranker_is_more_biased_than_targets():
    rng = np.random.default_rng(0)
    counts = rng.zipf(1.5, size=200).astype(float)
    tgt = rng.integers(0, 200, size=300)
    top = np.full(300, int(np.argmax(counts)))
    r = popularity_report(top, tgt, counts)
    assert r["HeadShare@1"] == 1.0 and r["PopLift@1"] > 1
