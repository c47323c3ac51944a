"""SASRec model + training on synthetic SequenceCase-shaped data (seconds on CPU)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from prefrec.errors import ConfigError, DataError
from prefrec.models.sasrec import SASRec, SASRecConfig, load_sasrec, pad_histories, save_sasrec
from prefrec.train.sequential import (
    NegativeSampler, SequentialTrainConfig, check_split, evaluate_ranker, split_fingerprint, train_sasrec,
    user_item_sets,
)

try:  # the real case type when the data layer has it; same fields otherwise
    from prefrec.data.sequences import SequenceCase as _Real
except ImportError:  # pragma: no cover
    _Real = None


@dataclass(frozen=True)
class FakeCase:
    user: int
    history: tuple[int, ...]
    target: int
    candidates: tuple[int, ...]
    target_pos: int


def make_case(user, history, target, candidates, target_pos):
    if _Real is not None:
        try:
            return _Real(user=user, history=tuple(history), target=target, candidates=tuple(candidates),
                         target_pos=target_pos)
        except TypeError:
            pass
    return FakeCase(user, tuple(history), target, tuple(candidates), target_pos)


N_ITEMS = 40


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster than two on a shared 2-core machine (no contention)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def synthetic_cases(users: range, seed: int = 0, n_cand: int = 20):
    """Each user walks i -> i+1 (mod N) from a random start: perfectly learnable sequences.

    Sliding windows of up to 10 items, candidates = target + 19 random non-history items.
    """
    rng = random.Random(seed)
    out = []
    for u in users:
        start = rng.randrange(N_ITEMS)
        seq = [(start + t) % N_ITEMS for t in range(14)]
        for end in range(3, len(seq)):
            hist, tgt = seq[max(0, end - 10):end], seq[end]
            pool = [i for i in range(N_ITEMS) if i not in hist and i != tgt]
            cands = rng.sample(pool, n_cand - 1) + [tgt]
            rng.shuffle(cands)
            out.append(make_case(u, hist, tgt, cands, cands.index(tgt)))
    return out


@pytest.fixture(scope="module")
def splits():
    # users disjoint across splits, as in LLaRA's LastFM split
    return synthetic_cases(range(0, 30), 0), synthetic_cases(range(30, 36), 1), synthetic_cases(range(36, 42), 2)


def test_pad_histories_left_pads_and_truncates():
    t = pad_histories([[1, 2, 3], list(range(12)), []], 4, 99)
    assert t.tolist() == [[99, 1, 2, 3], [8, 9, 10, 11], [99, 99, 99, 99]]


def test_user_state_reads_last_real_position_and_ignores_padding():
    torch.manual_seed(0)
    m = SASRec(SASRecConfig(n_items=N_ITEMS, dropout=0.0)).eval()
    with torch.no_grad():
        h = m.user_state([[3, 4, 5]])
        # same history given as an explicitly padded tensor -> same state
        h2 = m.user_state(pad_histories([[3, 4, 5]], 10, m.pad))
        # causal: appending an item changes the state, a future item cannot change past states
        full = m.encode(pad_histories([[3, 4, 5, 6]], 10, m.pad))
        part = m.encode(pad_histories([[3, 4, 5]], 10, m.pad))
    assert h.shape == (1, 64)
    assert torch.allclose(h, h2)
    assert torch.isfinite(full).all()
    assert not torch.allclose(full[0, -1], part[0, -1])


def test_scores_shapes_and_candidate_order(splits):
    train, _, _ = splits
    m = SASRec(SASRecConfig(n_items=N_ITEMS)).eval()
    with torch.no_grad():
        s = m.score_candidates(train[:5])
        full = m.full_scores([c.history for c in train[:5]])
    assert s.shape == (5, 20)
    cand = torch.as_tensor([list(c.candidates) for c in train[:5]])
    assert torch.allclose(s, full.gather(1, cand), atol=1e-5)
    with pytest.raises(DataError, match="out of range"):
        m.score_items([[1, 2]], [[N_ITEMS]])


def test_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        SASRecConfig(n_items=5, hidden=64, heads=3)
    with pytest.raises(ConfigError, match="similarity"):
        SASRecConfig(n_items=5, similarity="l2")


def test_negative_sampler_excludes_training_items(splits):
    train, _, _ = splits
    sampler = NegativeSampler(train, N_ITEMS, seed=0)
    seen = user_item_sets(train)
    users = [c.user for c in train[:50]]
    neg = sampler.sample(users, (30,))
    for u, row in zip(users, neg.tolist()):
        assert not (set(row) & seen[u])
    # fresh draws every call
    assert not torch.equal(neg, sampler.sample(users, (30,)))


@pytest.mark.parametrize("loss", ["bpr", "sl", "psl"])
def test_sasrec_learns_synthetic_sequences(splits, loss):
    train, val, test = splits
    cfg = SequentialTrainConfig(epochs=5, batch_size=64, num_negatives=16, learning_rate=3e-3, seed=0)
    model, info = train_sasrec(train, val, N_ITEMS, loss=loss, cfg=cfg, model_kwargs={"dropout": 0.1})
    res = evaluate_ranker(model, test)
    assert res["HR@1"] > 0.5, res          # chance is 0.05
    assert info["best"]["val/NDCG@10"] == max(r["val/NDCG@10"] for r in info["history"])


def test_trains_on_training_split_only(splits, tmp_path):
    """Validation cases never change the learnt weights (they only pick the epoch), and the
    checkpoint records the training split's fingerprint."""
    train, val, test = splits
    cfg = SequentialTrainConfig(epochs=2, batch_size=64, num_negatives=8, select_best=False, seed=3)
    m1, info1 = train_sasrec(train, val, N_ITEMS, cfg=cfg, out_dir=tmp_path / "a")
    m2, _ = train_sasrec(train, test, N_ITEMS, cfg=cfg)          # other "validation" data
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    m3, _ = train_sasrec(train[:-5], val, N_ITEMS, cfg=cfg)     # other training data -> other weights
    assert not torch.equal(m1.item_emb.weight, m3.item_emb.weight)
    fp = split_fingerprint(train)
    assert info1["train_split"] == fp
    # round trip through safetensors
    loaded, meta = load_sasrec(tmp_path / "a")
    assert meta["train_split"] == fp
    with torch.no_grad():
        assert torch.allclose(loaded.score_candidates(test[:4]), m1.score_candidates(test[:4]))
    check_split(meta, fp)
    with pytest.raises(DataError, match="another split"):
        check_split(meta, split_fingerprint(train + val))
    with pytest.raises(DataError, match="no training-split fingerprint"):
        check_split({}, fp)


def test_split_fingerprint_ignores_order_and_candidates(splits):
    train, _, _ = splits
    shuffled = list(reversed(train))
    recand = [make_case(c.user, c.history, c.target, tuple(reversed(c.candidates)), 19 - c.target_pos)
              for c in train]
    assert split_fingerprint(train) == split_fingerprint(shuffled) == split_fingerprint(recand)
    assert split_fingerprint(train) != split_fingerprint(train[1:])


def test_examples_last_vs_all_positions():
    from prefrec.train.sequential import _examples

    c = [make_case(7, (1, 2, 3), 4, tuple(range(5, 25)), 0)]
    P = 99
    inp, lab, users = _examples(c, 5, P, "all")
    assert inp.tolist() == [[P, P, 1, 2, 3]] and lab.tolist() == [[P, P, 2, 3, 4]] and users.tolist() == [7]
    _, lab_last, _ = _examples(c, 5, P, "last")
    assert lab_last.tolist() == [[P, P, P, P, 4]]


def test_all_positions_training_runs(splits):
    train, val, _ = splits
    cfg = SequentialTrainConfig(epochs=1, batch_size=64, num_negatives=4, positions="all")
    _, info = train_sasrec(train, val, N_ITEMS, loss="bpr", cfg=cfg)
    assert np.isfinite(info["history"][0]["train/loss"])
