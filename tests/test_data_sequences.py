"""Sequence cases and candidates: windows, exclusion rules, per-case determinism, LLaRA cases."""

from __future__ import annotations

import numpy as np
import pytest

from prefrec.data import readers as R
from prefrec.data import sequences as S
from prefrec.data.interactions import Dataset, Interactions
from prefrec.errors import DataError


def one_user(n: int = 15, n_items: int = 100) -> Interactions:
    items = np.arange(n)[::-1]  # rows in reverse time order
    return Interactions(user=np.zeros(n), item=items, n_users=1, n_items=n_items,
                        timestamp=np.arange(n)[::-1].astype(float), rating=np.arange(n, dtype=float) % 5 + 1)


def test_sliding_windows_like_llara():
    x = one_user()
    cases = S.build_sequences(x, max_history=10, min_history=3)
    seq = list(range(15))  # item k happens at time k (rows are stored newest first)
    assert len(cases) == 15 - 3
    assert cases[0].history == tuple(seq[:3]) and cases[0].target == seq[3]
    last = cases[-1]
    assert last.history == tuple(seq[4:14]) and last.target == seq[14]  # at most 10 items
    assert all(3 <= len(c.history) <= 10 for c in cases)
    assert last.history_ratings == tuple(x.rating[::-1][4:14]) and last.timestamp == 14.0
    assert cases[0].candidates == () and cases[0].target_pos == -1


def test_candidates_exclude_user_items_and_are_deterministic_per_case():
    x = one_user(15, 40)
    cases = S.build_sequences(x)
    full = S.add_candidates(cases, x, n_candidates=20, seed=7)
    for c in full:
        assert len(c.candidates) == 20 and len(set(c.candidates)) == 20
        assert c.candidates[c.target_pos] == c.target
        negs = set(c.candidates) - {c.target}
        assert not negs & set(range(15))  # never an item the user interacted with
    # a case's candidates do not depend on the other cases in the call
    assert S.add_candidates(cases[4:6], x, 20, seed=7) == full[4:6]
    assert S.add_candidates(cases, x, 20, seed=8) != full
    hist_only = S.add_candidates(cases, x, 20, seed=7, exclude="history")
    c = hist_only[0]
    assert not (set(c.candidates) - {c.target}) & set(c.history)


def test_candidates_dense_user_and_too_few_items():
    x = one_user(15, 34)  # 19 free items exactly: every case gets all of them
    full = S.add_candidates(S.build_sequences(x), x, 20)
    assert all(set(c.candidates) - {c.target} == set(range(15, 34)) for c in full)
    with pytest.raises(DataError, match="fewer candidates"):
        S.add_candidates(S.build_sequences(x), x, 21)


def test_target_position_is_spread():
    x = Interactions(user=np.repeat(np.arange(200), 5), item=np.tile(np.arange(5), 200), n_users=200, n_items=500,
                     timestamp=np.tile(np.arange(5.0), 200))
    cases = S.add_candidates(S.build_sequences(x, min_history=1), x)
    counts = np.bincount([c.target_pos for c in cases], minlength=20)
    assert counts.min() > 10  # 800 cases over 20 positions


def test_sdpo_candidates_reproduce_python_random():
    import random

    hist, target, n = (3, 5, 8), 11, 50
    pool = [i for i in range(n) if i not in hist and i != target]
    random.seed(target)
    want = random.sample(pool, 19) + [target]
    random.seed(target)
    random.shuffle(want)
    assert S.sdpo_candidates(hist, target, n) == tuple(want)


@pytest.fixture(scope="module")
def llara(data_dir):
    return R.read_llara_lastfm(data_dir / "llara-lastfm")


def test_cases_from_llara(llara):
    test = S.cases_from_llara(llara, "test")
    assert len(test) == 2495
    c = test[0]
    assert [llara.catalog.title(i) for i in c.history] == ["Kylie Minogue", "Avril Lavigne", "Ke$ha"]
    assert len(set(c.candidates)) == 20 and c.candidates[c.target_pos] == c.target
    assert not set(c.history) & set(c.candidates)
    assert S.cases_from_llara(llara, "test")[:50] == test[:50]
    seeded = S.cases_from_llara(llara, "val", sampler="seeded", seed=1)
    assert len(seeded) == 2767 and seeded != S.cases_from_llara(llara, "val", sampler="seeded", seed=2)
    assert min(c.user for c in test) >= 976 + 122  # test users follow train and val users
    with pytest.raises(DataError, match="no given sequence rows"):
        S.cases_from_llara(Dataset(name="x", interactions=llara.interactions), "test")


def test_ml100k_lm_splits(data_dir):
    ml = R.read_ml100k(data_dir / "ml-100k")
    small = Dataset(name="ml", interactions=ml.interactions.subset(ml.interactions.user < 100), catalog=ml.catalog)
    a = S.ml100k_lm_splits(small, seed=0)
    b = S.ml100k_lm_splits(small, seed=0)
    assert a == b
    users = {k: {c.user for c in v} for k, v in a.items()}
    assert [len(users[k]) for k in ("train", "val", "test")] == [80, 10, 10]
    per_user = small.interactions.user_items()
    for c in a["test"][:200]:
        assert 3 <= len(c.history) <= 10 and c.candidates[c.target_pos] == c.target
        assert not (set(c.candidates) - {c.target}) & set(per_user[c.user].tolist())


# ----------------------------------------------------------------------------- properties
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 59)), min_size=1, max_size=40),
       st.integers(0, 5), st.sampled_from(["user", "history"]))
def test_candidate_invariants(pairs, seed, exclude):
    u, i = zip(*pairs)
    x = Interactions(user=u, item=i, n_users=6, n_items=60, timestamp=range(len(u)))
    cases = S.build_sequences(x, min_history=1, max_history=4)
    out = S.add_candidates(cases, x, n_candidates=10, seed=seed, exclude=exclude)
    per_user = x.user_items()
    for c, o in zip(cases, out):
        assert (o.user, o.history, o.target) == (c.user, c.history, c.target)
        assert len(set(o.candidates)) == 10 and o.candidates[o.target_pos] == o.target
        negs = set(o.candidates) - {o.target}
        banned = set(per_user[o.user].tolist()) if exclude == "user" else set(o.history)
        assert not negs & (banned | {o.target}) and len(negs) == 9
    assert S.add_candidates(cases[::-1], x, 10, seed=seed, exclude=exclude) == out[::-1]
