"""Splits: protocol semantics on tiny hand-made tables, golden counts on real data, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from prefrec.data import readers as R
from prefrec.data import splits as P
from prefrec.data.interactions import Interactions
from prefrec.errors import ConfigError, DataError


def tiny() -> Interactions:
    # user 0: items 0..4 at times 5,4,3,2,1 (reverse row order); user 1: 2 items; user 2: 1 item
    user = [0, 0, 0, 0, 0, 1, 1, 2]
    item = [0, 1, 2, 3, 4, 0, 5, 1]
    ts = [5, 4, 3, 2, 1, 10, 11, 7]
    return Interactions(user=user, item=item, n_users=3, n_items=6, timestamp=ts)


def pairs(x: Interactions) -> set[tuple[int, int]]:
    return set(zip(x.user.tolist(), x.item.tolist()))


def test_leave_one_out_uses_time_not_row_order():
    parts = P.leave_one_out(tiny())
    assert pairs(parts["test"]) == {(0, 0), (1, 5)}
    assert pairs(parts["val"]) == {(0, 1)}
    assert pairs(parts["train"]) == {(0, 2), (0, 3), (0, 4), (1, 0), (2, 1)}
    assert parts["train"].n_items == 6  # id space shared
    by_row = P.leave_one_out(tiny(), by="row")
    assert pairs(by_row["test"]) == {(0, 4), (1, 5)}


def test_time_splits_need_timestamps():
    x = Interactions(user=[0], item=[0], n_users=1, n_items=1, source="t.csv")
    with pytest.raises(DataError, match="t.csv.*timestamps.*Fix: use a dataset with timestamps"):
        P.leave_one_out(x)
    with pytest.raises(DataError, match="Fix: use random_split"):
        P.global_time_split(x)


def test_bad_ratios():
    with pytest.raises(ConfigError, match="summing to 1"):
        P.random_split(tiny(), (0.5, 0.2))


def test_global_time_split_orders_by_time():
    x = tiny()
    parts = P.global_time_split(x, (0.5, 0.25, 0.25))
    assert [len(p) for p in parts.values()] == [4, 2, 2]
    assert parts["train"].timestamp.max() <= parts["val"].timestamp.min() <= parts["test"].timestamp.min()


def test_user_split_keeps_users_whole_and_is_seeded():
    x = Interactions(user=np.repeat(np.arange(20), 3), item=np.tile([0, 1, 2], 20), n_users=20, n_items=3)
    a, b = P.user_split(x, seed=3), P.user_split(x, seed=3)
    users = {k: set(v.user.tolist()) for k, v in a.items()}
    assert [len(users[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert not (users["train"] & users["val"]) and not (users["val"] & users["test"])
    assert all(np.array_equal(a[k].user, b[k].user) for k in a)
    assert users != {k: set(v.user.tolist()) for k, v in P.user_split(x, seed=4).items()}


def test_random_split_deterministic_and_per_user():
    x = tiny()
    a = P.random_split(x, (0.5, 0.5), seed=1)
    b = P.random_split(x, (0.5, 0.5), seed=1)
    assert pairs(a["train"]) == pairs(b["train"]) and len(a["train"]) == 4
    pu = P.random_split(x, (0.8, 0.2), seed=0, per_user=True)
    assert np.bincount(pu["train"].user, minlength=3).tolist() == [4, 1, 0]  # floor(0.8 n_u)


def test_k_core_iterates_until_stable():
    # item 2 has 1 row; dropping it leaves user 1 with 1 row -> dropped too
    x = Interactions(user=[0, 0, 1, 1, 2, 2], item=[0, 1, 1, 2, 0, 1], n_users=3, n_items=3)
    core = P.k_core(x, 2)
    assert pairs(core) == {(0, 0), (0, 1), (2, 0), (2, 1)}
    c, users, items = P.compact(core)
    assert (c.n_users, c.n_items) == (2, 2) and users.tolist() == [0, 2] and items.tolist() == [0, 1]


def test_real_10core_and_holdout_match_ir_benchmark(data_dir):
    ml = R.read_ml100k(data_dir / "ml-100k").interactions
    core = P.k_core(ml.subset(ml.rating >= 3), 10)  # data/README.md cross-check: 80,393 / 939 / 1,016
    assert (len(core), np.unique(core.user).size, np.unique(core.item).size) == (80393, 939, 1016)
    ib = R.read_irbench_zip(data_dir / "ir-benchmark/iid/movielens-100k/proc.zip")
    tr, va = P.holdout_validation(ib.splits["train"], seed=2024)
    assert (len(tr), len(va)) == (57947, 5997)  # IR-Benchmark's measured train/valid counts
    tr2, va2 = P.holdout_validation(ib.splits["train"], seed=2024)
    assert np.array_equal(va.item, va2.item)
    assert not pairs(tr) & pairs(va)


def test_holdout_formula():
    x = Interactions(user=[0] * 25 + [1] * 3 + [2], item=list(range(25)) + [0, 1, 2] + [0], n_users=3, n_items=25)
    _, va = P.holdout_validation(x, seed=0)
    assert np.bincount(va.user, minlength=3).tolist() == [2, 1, 0]  # floor(2.5)=2, max(0,1)=1, n_u=1 kept


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def tables(draw):
    n = draw(st.integers(1, 40))
    users = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(0, 11), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    return Interactions(user=users, item=items, n_users=8, n_items=12, timestamp=ts)


def rows(x: Interactions) -> list[tuple]:
    return sorted(zip(x.user.tolist(), x.item.tolist(), x.timestamp.tolist()))


@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(0, 3))
def test_every_split_is_a_partition(x, seed):
    for parts in (P.leave_one_out(x), P.user_split(x, seed=seed), P.global_time_split(x),
                  P.random_split(x, seed=seed), P.random_split(x, (0.7, 0.3), seed=seed, per_user=True),
                  dict(zip(("train", "val"), P.holdout_validation(x, seed=seed)))):
        assert sorted(sum((rows(p) for p in parts.values()), [])) == rows(x)
        assert all(p.n_items == 12 and p.n_users == 8 for p in parts.values())


@settings(max_examples=40, deadline=None)
@given(tables())
def test_leave_one_out_test_is_latest(x):
    parts = P.leave_one_out(x)
    for u, _, t in rows(parts["test"]):
        assert all(t >= tt for uu, _, tt in rows(parts["train"]) + rows(parts["val"]) if uu == u)
