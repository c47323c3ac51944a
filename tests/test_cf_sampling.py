"""Splits and negative samplers: exclusions, uniformity, shared masks, the noise setting."""

import numpy as np
import pytest
import torch

from prefrec.cf.data import UserItems, false_negative_split, holdout_per_user, random_split
from prefrec.cf.sampling import NegativeSampler
from prefrec.errors import ConfigError, DataError


def toy(n_users=30, n_items=25, seed=0, p=0.3):
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < p
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    u, i = np.nonzero(m)
    return UserItems.from_pairs(u, i, n_users, n_items), m


def test_useritems_dedups_and_sorts():
    ui = UserItems.from_pairs([1, 0, 1, 1], [3, 2, 0, 3], 3, 4)
    assert ui.items_of(1).tolist() == [0, 3] and ui.items_of(2).tolist() == []
    assert ui.counts.tolist() == [1, 2, 0] and ui.item_counts().tolist() == [1, 0, 1, 1]


def test_holdout_sizes_and_disjoint():
    ui, _ = toy()
    kept, held = holdout_per_user(ui, 0.1, seed=1)
    n = ui.counts
    want = np.where(n >= 2, np.maximum(np.floor(0.1 * n), 1), 0)
    np.testing.assert_array_equal(held.counts, want)
    for u in range(ui.n_users):
        assert set(kept.items_of(u)) | set(held.items_of(u)) == set(ui.items_of(u))
        assert not set(kept.items_of(u)) & set(held.items_of(u))
    k2, h2 = holdout_per_user(ui, 0.1, seed=1)
    np.testing.assert_array_equal(h2.indices, held.indices)


def test_random_split_per_user():
    ui, m = toy(seed=3)
    tr, te = random_split(ui.users, ui.indices, ui.n_users, ui.n_items, 0.2, seed=0)
    np.testing.assert_array_equal(te.counts, np.floor(0.2 * ui.counts))
    assert len(tr) + len(te) == len(ui)


def test_per_row_negatives_exclude_positives_and_are_uniform():
    ui, m = toy(n_users=4, n_items=12, p=0.5)
    s = NegativeSampler(ui, seed=0)
    users = torch.arange(4).repeat_interleave(50)
    neg = s.sample(users, 400).numpy()
    for u in range(4):
        got = neg[users.numpy() == u].ravel()
        assert not m[u, got].any(), "sampled a training positive"
        allowed = np.flatnonzero(~m[u])
        freq = np.bincount(got, minlength=12)[allowed] / got.size
        np.testing.assert_allclose(freq, 1 / len(allowed), atol=0.01)
    # fresh every call
    assert not np.array_equal(s.sample(users, 400).numpy(), neg)


def test_shared_mask_matches_brute_force():
    ui, m = toy(n_users=20, n_items=40, p=0.4)
    s = NegativeSampler(ui, seed=2)
    users = torch.tensor([0, 3, 3, 7, 19, 5])
    items = s.sample_shared(30)
    assert len(set(items.tolist())) == 30
    mask = s.shared_mask(users, items)
    want = ~torch.from_numpy(m[users.numpy()][:, items.numpy()])
    assert torch.equal(mask, want)
    with pytest.raises(ConfigError):
        s.sample_shared(41)


def test_user_with_every_item_is_a_data_error():
    ui = UserItems.from_pairs([0, 0, 1], [0, 1, 0], 2, 2)
    with pytest.raises(DataError, match="all 2 items"):
        NegativeSampler(ui)


def test_false_negative_setting():
    ui, m = toy(n_users=10, n_items=60, p=0.5, seed=5)
    tr, fn = false_negative_split(ui, 0.1, seed=0)
    np.testing.assert_array_equal(fn.counts, np.minimum(np.round(0.1 * ui.counts), ui.counts - 1))
    for u in range(10):
        assert not set(tr.items_of(u)) & set(fn.items_of(u))
        assert set(tr.items_of(u)) | set(fn.items_of(u)) == set(ui.items_of(u))
    users = torch.arange(10).repeat_interleave(20)
    s1 = NegativeSampler(tr, seed=0, noise_p=0.999999, false_negatives=fn)
    neg = s1.sample(users, 50).numpy()
    for r, u in enumerate(users.tolist()):
        if fn.counts[u]:
            assert set(neg[r]) <= set(fn.items_of(u))
    s3 = NegativeSampler(tr, seed=0, noise_p=0.3, false_negatives=fn)
    neg = s3.sample(users, 2000).numpy()
    share = np.mean([np.isin(neg[r], fn.items_of(u)).mean() for r, u in enumerate(users.tolist())])
    # 0.3 by the coin, plus the uniform draws that land on a false negative (they are not training items)
    want = np.mean([0.3 + 0.7 * fn.counts[u] / (60 - tr.counts[u]) if fn.counts[u] else 0.0
                    for u in users.tolist()])
    assert share == pytest.approx(want, abs=0.01)
    assert not any(np.isin(neg[r], tr.items_of(u)).any() for r, u in enumerate(users.tolist()))
    with pytest.raises(ConfigError):
        NegativeSampler(tr, noise_p=0.3)
    with pytest.raises(ConfigError):
        NegativeSampler(tr, noise_p=1.0, false_negatives=fn)


def test_sampler_state_round_trip():
    ui, _ = toy()
    s = NegativeSampler(ui, seed=9)
    st = s.get_state()
    a = s.sample(torch.arange(5), 7)
    s.set_state(st)
    assert torch.equal(a, s.sample(torch.arange(5), 7))


@pytest.mark.parametrize("table", [0.0, 1e9])  # search / per-batch table
def test_batch_local_search_equals_the_counting_definition(monkeypatch, table):
    """item = r + #{k : p_k - k <= r} (the r-th non-interacted item), checked by brute force,
    with repeated users and users that have no training items in the batch."""
    ui, m = toy(n_users=40, n_items=30, p=0.4, seed=7)
    ui = UserItems.from_pairs(ui.users[ui.users != 5], ui.indices[ui.users != 5], 40, 30)  # user 5: empty
    m[5] = False
    monkeypatch.setattr(NegativeSampler, "TABLE_CELLS_PER_DRAW", table)
    s = NegativeSampler(ui, seed=3)
    users = torch.tensor([5, 0, 3, 3, 39, 5, 12, 0])
    neg = s.sample(users, 200).numpy()
    for b, u in enumerate(users.tolist()):
        free = np.flatnonzero(~m[u])
        assert set(neg[b]) <= set(free)
        # the same draws through the definition: the r-th free item
        adj = ui.items_of(u) - np.arange(len(ui.items_of(u)))
        r = np.searchsorted(free, neg[b])  # rank of each drawn item among the free ones
        np.testing.assert_array_equal(r + np.searchsorted(adj, r, side="right"), neg[b])


def test_int64_keys_path_gives_the_same_draws(monkeypatch):
    """Catalogues too large for int32 local keys take the int64 path: same items, r untouched."""
    ui, _ = toy(n_users=20, n_items=25, seed=9)
    users = torch.tensor([0, 4, 4, 19, 7])
    monkeypatch.setattr(NegativeSampler, "TABLE_CELLS_PER_DRAW", 0.0)  # the search branch
    a = NegativeSampler(ui, seed=11).sample(users, 300)
    monkeypatch.setattr(torch, "int32", torch.int64)  # forces the int64 branch
    b = NegativeSampler(ui, seed=11).sample(users, 300)
    assert torch.equal(a, b)


def test_table_and_search_give_the_same_draws(monkeypatch):
    ui, _ = toy(n_users=50, n_items=40, seed=12, p=0.35)
    users = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(0))
    out = []
    for table in (0.0, 1e9):
        monkeypatch.setattr(NegativeSampler, "TABLE_CELLS_PER_DRAW", table)
        out.append(NegativeSampler(ui, seed=5).sample(users, 100))
    assert torch.equal(out[0], out[1])
