"""RecPO: preference scores, training cases (synthetic + a MovieLens-100K slice), margins, objective."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from prefrec.data.interactions import Dataset, Interactions
from prefrec.errors import ConfigError, DataError
from prefrec.losses import sdpo
from prefrec.lm.recpo import (PREF_SCORES_KEY, RecpoObjective, RecpoOptions, build_recpo_cases,
                              preference_score, recpo_batch_loss, recpo_batch_margins, recpo_lm_samples,
                              recpo_splits)
from prefrec.lm.samples import LMSample


def test_preference_score_values():
    assert preference_score(5, 0) == 5.0
    assert preference_score(4, 3) == pytest.approx(2.0)
    assert preference_score(3, 10) == pytest.approx(3 / math.sqrt(11))  # random fill, ~0.9045
    assert preference_score(4, 3, decay=0.0) == 4.0
    np.testing.assert_allclose(preference_score(np.array([4.0, 2.0]), np.array([0, 3])), [4.0, 1.0])
    with pytest.raises(ConfigError):
        preference_score(4, 1, decay=-1)


def _toy(ratings, n_items=60, users=1):
    """One user (or more, same sequence) rating items 0..len-1 in time order."""
    n = len(ratings)
    return Interactions(user=np.repeat(np.arange(users), n), item=np.tile(np.arange(n), users),
                        n_users=users, n_items=n_items, timestamp=np.tile(np.arange(n) * 10.0, users),
                        rating=np.tile(np.asarray(ratings, dtype=float), users), source="toy")


def test_cases_follow_sequence_chosen_and_fill():
    # items 0..7; history = first 3, follow = items 3..7 with ratings 2, 5, 4, 1, 5
    inter = _toy([4, 4, 4, 2, 5, 4, 1, 5])
    cases = build_recpo_cases(inter, dataset="toy", min_history=3, max_history=10, max_cases=None, seed=1)
    first = cases[0]
    c = first.case
    assert c.history == (0, 1, 2)
    assert len(c.candidates) == 20 and len(set(c.candidates)) == 20
    # follow items 3..7 with steps 0..4; s = 2, 5/sqrt2, 4/sqrt3, 1/2, 5/sqrt5 -> chosen item 4
    assert c.target == 4 and c.candidates[c.target_pos] == 4
    by_item = {it: (r, st, s, f) for it, r, st, s, f in zip(c.candidates, first.ratings, first.steps,
                                                              first.scores, first.is_follow)}
    assert by_item[3][:2] == (2.0, 0) and by_item[7][:2] == (5.0, 4)
    assert by_item[4][2] == pytest.approx(5 / math.sqrt(2))
    fills = [it for it in c.candidates if not by_item[it][3]]
    assert len(fills) == 15 and all(it >= 8 for it in fills)  # never an item the user interacted with
    assert all(by_item[it][:2] == (3.0, 10) for it in fills)
    assert first.chosen_score == max(first.scores)
    assert c.history_ratings == (4.0, 4.0, 4.0)


def test_low_rated_top_candidate_is_dropped_and_output_is_deterministic():
    # window at t=3: follow ratings 3, 3 -> top is rating 3 -> dropped; t=4: follow [3] -> dropped
    inter = _toy([5, 5, 5, 3, 3])
    assert build_recpo_cases(inter, min_history=3, max_cases=None) == []
    inter = _toy([4, 4, 4, 2, 5, 4, 1, 5], users=3)
    a = build_recpo_cases(inter, min_history=3, max_cases=None, seed=3)
    b = build_recpo_cases(inter, min_history=3, max_cases=None, seed=3)
    assert a == b
    few = build_recpo_cases(inter, min_history=3, max_cases=4, seed=3)
    assert len(few) == 4 and all(x in a for x in few)


def test_max_follow_limits_follow_items():
    inter = _toy([4, 4, 4, 5, 5, 5, 5, 5, 5])
    c = build_recpo_cases(inter, min_history=3, max_follow=2, max_cases=None)[0]
    assert sum(c.is_follow) == 2


@pytest.mark.parametrize("missing", ["rating", "timestamp"])
def test_missing_ratings_or_timestamps_is_a_data_error_naming_the_dataset(missing):
    inter = _toy([4, 4, 4, 5, 5])
    kw = dict(user=inter.user, item=inter.item, n_users=1, n_items=60, timestamp=inter.timestamp,
              rating=inter.rating)
    kw[missing] = None
    bad = Interactions(**kw)
    with pytest.raises(DataError, match="lastfm-hetrec") as e:
        build_recpo_cases(bad, dataset="lastfm-hetrec")
    assert ("ratings" if missing == "rating" else "timestamps") in str(e.value)
    with pytest.raises(DataError, match="'implicit'"):
        recpo_splits(Dataset(name="implicit", interactions=bad))


def test_movielens_slice_keeps_sdpo_test_protocol(data_dir):
    from prefrec.data.registry import load_dataset
    from prefrec.data.sequences import ml100k_lm_splits

    full = load_dataset("ml-100k", data_dir)
    x = full.interactions
    keep = x.user < 60
    small = Dataset(name="ml-100k", interactions=x.subset(keep), catalog=full.catalog)
    sp = recpo_splits(small, seed=0, max_cases=500)
    ref = ml100k_lm_splits(small, seed=0)
    assert sp["test"] == ref["test"] and sp["val"] == ref["val"]  # identical S-DPO test cases
    train_users = {c.case.user for c in sp["train"]}
    assert train_users.isdisjoint({c.user for c in ref["test"]} | {c.user for c in ref["val"]})
    assert 0 < len(sp["train"]) <= 500
    ratings = x.rating[keep]
    for rc in sp["train"][:50]:
        assert rc.ratings[rc.case.target_pos] >= 4
        assert rc.scores[rc.case.target_pos] == max(rc.scores)
        rows = np.flatnonzero((x.user == rc.case.user))
        seen = set(x.item[rows].tolist())
        for it, f in zip(rc.case.candidates, rc.is_follow):
            assert (it in seen) == f  # follow items are the user's, fills never are
    assert ratings.min() >= 1


def test_recpo_lm_samples_put_scores_in_extra():
    inter = _toy([4, 4, 4, 2, 5, 4, 1, 5])
    cases = build_recpo_cases(inter, min_history=3, max_cases=None)

    def to_sample(c):
        return LMSample(prompt="p", history=[str(i) for i in c.history], candidates=[f"m{i}" for i in c.candidates],
                        target_index=c.target_pos, user=c.user, item_ids=list(c.candidates))

    samples = recpo_lm_samples(cases, to_sample)
    assert samples[0].extra[PREF_SCORES_KEY] == list(cases[0].scores)
    assert samples[0].target == f"m{cases[0].case.target}"

    def bad(c):
        return to_sample(c).__class__(prompt="p", history=[], candidates=["a"], target_index=0)

    with pytest.raises(DataError, match="reordered or dropped"):
        recpo_lm_samples(cases, bad)


def test_margins_and_loss_hand_computed():
    sp = torch.tensor([5.0])
    sn = torch.tensor([[2.5, 3 / math.sqrt(11)]])
    m = recpo_batch_margins(sp, sn, lam=0.5, mode="ratio")
    torch.testing.assert_close(m, torch.tensor([[1.0, 0.5 * 5 * math.sqrt(11) / 3]]))
    pos, neg = torch.tensor([0.3]), torch.tensor([[0.1, 0.2]])
    expect = math.log1p(math.exp(-0.2 + 1.0) + math.exp(-0.1 + float(m[0, 1])))
    assert float(recpo_batch_loss(pos, neg, sp, sn, lam=0.5)) == pytest.approx(expect, rel=1e-6)
    # lambda = 0 -> S-DPO; missing (NaN) scores and masked entries -> margin 0
    torch.testing.assert_close(recpo_batch_loss(pos, neg, sp, sn, lam=0.0), sdpo(pos, neg))
    m2 = recpo_batch_margins(sp, torch.tensor([[float("nan"), 2.5]]), lam=1.0,
                             mask=torch.tensor([[True, False]]))
    assert m2.abs().sum() == 0


def test_options_validation():
    RecpoOptions().validate()
    with pytest.raises(ConfigError, match="margin"):
        RecpoOptions(margin="diff").validate()
    with pytest.raises(ConfigError, match="lambda"):
        RecpoOptions(lam=-1).validate()


def _batch(samples, rows, cols, policy, reference, beta=1.0):
    return SimpleNamespace(policy=policy, reference=reference, rows=rows, cols=cols, samples=samples, beta=beta)


def test_objective_reads_scores_by_rows_and_cols():
    s1 = LMSample(prompt="p", history=[], candidates=list("abcd"), target_index=1,
                  extra={PREF_SCORES_KEY: [1.0, 4.0, 2.0, 0.5]})
    s2 = LMSample(prompt="q", history=[], candidates=list("abcd"), target_index=0)  # S-DPO eval case
    cols = torch.tensor([[1, 2, 3], [0, 1, 2]])
    policy = torch.tensor([[0.5, 0.1, -0.2], [0.3, 0.0, 0.4]], requires_grad=True)
    ref = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.2]])
    obj = RecpoObjective(RecpoOptions(margin="ratio", lam=1.0))
    loss, per_row, extra = obj(_batch([s1, s2], [0, 1], cols, policy, ref, beta=2.0))
    r = 2.0 * (policy - ref)
    m = torch.tensor([[4.0 / 2.0, 4.0 / 0.5], [0.0, 0.0]])
    torch.testing.assert_close(per_row, sdpo(r[:, 0], r[:, 1:], margin=m))
    loss.backward()
    assert policy.grad is not None and "recpo/margin" in extra
    free = RecpoObjective(RecpoOptions(lam=0.0), reference_free=True)
    _, pr, _ = free(_batch([s1, s2], [0, 1], cols, policy.detach(), ref, beta=1.0))
    torch.testing.assert_close(pr, sdpo(policy.detach()[:, 0], policy.detach()[:, 1:]))


def test_recpo_config_section_uses_lambda_key(tmp_path):
    from pydantic import Field

    from prefrec.config import Config, load_config
    from prefrec.lm.recpo import RecpoConfig, recpo_objective, recpo_options

    class Cfg(Config):
        reference_free: bool = False
        recpo: RecpoConfig = Field(default_factory=RecpoConfig)

    y = tmp_path / "c.yaml"
    y.write_text("recpo:\n  margin: log\n  lambda: 2\n")
    cfg = load_config(Cfg, y)
    assert recpo_options(cfg) == RecpoOptions(margin="log", lam=2.0, decay=0.5)
    assert isinstance(recpo_objective(cfg), RecpoObjective)
    with pytest.raises(ConfigError, match="recpo.lamda"):
        load_config(Cfg, None, ["recpo.lamda=1"])
    with pytest.raises(ConfigError, match="margin"):
        load_config(Cfg, None, ["recpo.margin=diff"])
    with pytest.raises(ConfigError, match="lambda"):
        load_config(Cfg, None, ["recpo.lambda=-1"])
