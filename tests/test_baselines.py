"""Random / popularity rankers, item counts and evaluate_ranker on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefrec.errors import DataError
from prefrec.train.sequential import PopularityRanker, RandomRanker, evaluate_ranker, item_counts
from test_sasrec import make_case, synthetic_cases


def _cases():
    # 3 users, 6 items. user 0 appears in two sliding windows: items count once per user.
    return [
        make_case(0, (0, 1), 2, (3, 2, 4), 1),
        make_case(0, (0, 1, 2), 3, (3, 5, 4), 0),
        make_case(1, (0,), 2, (2, 5, 1), 0),
        make_case(2, (4,), 0, (1, 0, 5), 1),
    ]


def test_item_counts_are_distinct_users():
    # item 0: users 0,1,2 -> 3 ; item 1: user 0 ; item 2: users 0,1 ; item 3: user 0 ; item 4: user 2
    assert item_counts(_cases(), 6).tolist() == [3, 1, 2, 1, 1, 0]
    with pytest.raises(DataError, match="outside"):
        item_counts(_cases(), 4)


def test_popularity_ranker_by_hand():
    counts = item_counts(_cases(), 6)
    r = PopularityRanker(counts, seed=0)
    s = r.score_candidates(_cases())
    # case 0 candidates (3, 2, 4) counts (1, 2, 1) -> item 2 on top; ties 3 vs 4 broken by jitter < 0.5
    assert s.argmax(1).tolist()[0] == 1
    assert (s[0, 1] - s[0, 0]) > 0.5
    res = evaluate_ranker(r, _cases(), counts=counts)
    # top-1: case0 item2 (hit), case1 item3 (count1) vs 5(0),4(1): tie 3/4 by jitter; case2 item2 (hit); case3 item0 (hit)
    assert res["HR@1"] >= 0.75
    assert res["ValidRatio"] == 1.0 and "HeadShare@1" in res


def test_random_ranker_seeded_and_near_chance():
    cases = synthetic_cases(range(200), seed=3)
    a = RandomRanker(seed=1).score_candidates(cases[:10])
    b = RandomRanker(seed=1).score_candidates(cases[:10])
    assert torch.equal(a, b)
    res = evaluate_ranker(RandomRanker(seed=0), cases)
    assert abs(res["HR@1"] - 1 / 20) < 0.02           # 2,200 cases: sd ~ 0.005
    assert abs(res["HR@5"] - 5 / 20) < 0.04


def test_evaluate_ranker_checks_target_pos():
    # candidates[target_pos] != target: refused (by the case type itself or by the evaluator)
    with pytest.raises((DataError, ValueError)):
        evaluate_ranker(RandomRanker(), [make_case(0, (1,), 2, (2, 3, 4), 1)])


def test_evaluate_oracle():
    class Oracle:
        def score_candidates(self, cases):
            s = torch.zeros(len(cases), len(cases[0].candidates))
            s[torch.arange(len(cases)), torch.as_tensor([c.target_pos for c in cases])] = 1.0
            return s

    res = evaluate_ranker(Oracle(), _cases(), counts=np.ones(6))
    assert res["HR@1"] == 1.0 and res["NDCG@5"] == 1.0 and res["HR@1/head"] == 1.0


def _parser():
    import argparse

    from prefrec.commands import baseline

    p = argparse.ArgumentParser()
    baseline.register(p.add_subparsers(dest="command"))
    return p


@pytest.mark.parametrize("model", ["random", "popularity", "sasrec"])
def test_baseline_cli_end_to_end(monkeypatch, tmp_path, model, capsys):
    """`prefrec baseline` on synthetic cases (the loader is swapped; real data runs are in docs/results)."""
    import json

    from prefrec.commands import baseline
    from test_sasrec import N_ITEMS

    splits = {"train": synthetic_cases(range(0, 30), 0), "val": synthetic_cases(range(30, 34), 1),
              "test": synthetic_cases(range(34, 40), 2)}
    monkeypatch.setattr(baseline, "load_cases", lambda dataset, seed=0, data_dir=None: (splits, N_ITEMS))
    threads = torch.get_num_threads()  # the command sets train.threads (1) for the process
    args = _parser().parse_args(["baseline", "--dataset", "ml-100k", "--model", model, "--loss", "sl",
                                 "--run-dir", str(tmp_path / "run"), "train.epochs=2", "train.batch_size=64",
                                 "train.num_negatives=8"])
    assert args.func(args) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["metrics"]["n"] == len(splits["test"]) and "HeadShare@1" in res["metrics"]
    assert (tmp_path / "run" / "config.yaml").exists()
    assert "HR@1" in capsys.readouterr().out
    if model == "sasrec":
        from prefrec.models.sasrec import load_sasrec
        from prefrec.train.sequential import check_split, split_fingerprint

        _, meta = load_sasrec(tmp_path / "run" / "checkpoints")
        check_split(meta, split_fingerprint(splits["train"]))
        assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    torch.set_num_threads(threads)


def test_baseline_cli_rejects_unknown_keys_and_datasets(tmp_path, data_dir):
    from prefrec.commands.baseline import load_cases
    from prefrec.errors import ConfigError, DataError

    args = _parser().parse_args(["baseline", "--model", "random", "train.epoch=3"])
    with pytest.raises(ConfigError, match="epochs"):
        args.func(args)
    with pytest.raises(DataError, match="unknown dataset"):
        load_cases("no-such-dataset", data_dir=str(data_dir))
    # llara-movielens has no training rows: baselines learn from the windows inside the histories
    splits, n_items = load_cases("llara-movielens", data_dir=str(data_dir))
    assert len(splits["test"]) > 0 and len(splits["train"]) > 0
    shown: dict[int, set[int]] = {}
    for c in splits["val"] + splits["test"]:
        shown.setdefault(c.user, set()).update(c.history)
    # every training window lies inside a history: no evaluated target is learned from
    assert all(c.target in shown[c.user] and set(c.history) <= shown[c.user] for c in splits["train"])


def test_lm_eval_cases_selects_the_lm_subsample(monkeypatch):
    """`baseline --limit N` keeps exactly the cases evaluate-lm's lm_samples(limit=N) keeps."""
    from prefrec.commands import baseline
    from prefrec.errors import DataError
    from prefrec.lm.samples import LMSample
    from test_sasrec import synthetic_cases as sc

    cases = sc(range(0, 6), 3)
    keep = cases[1::3]
    fake = [LMSample(prompt="p", history=["h"], candidates=[str(i) for i in c.candidates],
                     target_index=c.target_pos, user=c.user, item_ids=list(c.candidates)) for c in keep]
    import prefrec.lm.prompts as prompts_mod
    monkeypatch.setattr(prompts_mod, "lm_samples", lambda *a, **k: fake)
    assert baseline.lm_eval_cases(cases, "ml-100k", "test", len(keep)) == keep
    with pytest.raises(DataError, match="matched"):
        baseline.lm_eval_cases(cases[:3], "ml-100k", "test", len(keep))
