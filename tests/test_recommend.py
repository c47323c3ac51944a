"""Use the model: ``prefrec recommend`` / ``prefrec.load(run).recommend`` round-trip with evaluation."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

import prefrec
from prefrec.cli import main
from prefrec.errors import PrefrecError
from prefrec.experiment import load_experiment, run_experiment

from test_experiment import tiny_study


@pytest.fixture(scope="module")
def cf_run_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rec")
    f = tiny_study(tmp, losses=("psl",))
    res = run_experiment(load_experiment(f), echo=lambda s: None)
    return res.stages[0].run_dir, tmp / "data"


@pytest.fixture()
def cf_run(cf_run_dirs, monkeypatch):
    """``prefrec.load(run)`` finds the data through $PREFREC_DATA, as a user's shell would."""
    monkeypatch.setenv("PREFREC_DATA", str(cf_run_dirs[1]))
    return cf_run_dirs


def test_cli_equals_api(cf_run, capsys):
    run, data = cf_run
    assert main(["-q", "recommend", "--run", str(run), "--users", "1", "2", "3", "--k", "4",
                 "--format", "json", "--data-dir", str(data)]) == 0
    rows = json.loads(capsys.readouterr().out)
    api_rows = prefrec.load(run).recommend(["1", "2", "3"], k=4)
    assert rows == api_rows
    assert [r["user"] for r in rows] == ["1"] * 4 + ["2"] * 4 + ["3"] * 4
    assert rows[0]["title"].startswith("Movie ") and rows[0]["rank"] == 1
    assert all(a["score"] >= b["score"] for a, b in zip(rows, rows[1:]) if a["user"] == b["user"])

    assert main(["-q", "recommend", "--run", str(run), "--users", "1", "--k", "2", "--data-dir", str(data)]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["item"] for r in table] == [r["item"] for r in rows[:2]]


def test_topk_equals_evaluation(cf_run):
    """Recommending for every user reproduces the run's test metrics exactly: the lists are the
    evaluation's top-k (same weights, same split, same masked items)."""
    from prefrec.metrics.ranking import ranking_metrics

    run, data = cf_run
    rec = prefrec.load(run)
    users = [str(u) for u in rec.user_ids]
    ks = rec.cfg.train.ks
    top = rec.top_k_indices(users, max(ks)).numpy()
    test = rec.splits.test
    hits = np.stack([np.isin(top[u], test.items_of(u)) for u in range(len(users))])
    mine = ranking_metrics(hits, test.counts, ks, rec.cfg.data.denominator)
    reported = json.loads((run / "results.json").read_text())["metrics"]
    for k, v in mine.items():
        assert v == pytest.approx(reported[k], abs=1e-9), k


def test_masks(cf_run):
    run, data = cf_run
    rec = prefrec.load(run)
    u = 0
    train_items = set(rec.splits.train.items_of(u).tolist())
    valid_items = set(rec.splits.valid.items_of(u).tolist())
    n = rec._I.shape[0]
    got = set(rec.top_k_indices(["1"], n - len(train_items)).flatten().tolist())
    assert not got & train_items
    seen = set(rec.top_k_indices(["1"], n - len(train_items) - len(valid_items), mask="seen").flatten().tolist())
    assert not seen & (train_items | valid_items)


def test_unknown_user_and_bad_k(cf_run, capsys):
    run, data = cf_run
    assert main(["recommend", "--run", str(run), "--users", "999", "--data-dir", str(data)]) == 2
    assert "user '999' is not in dataset" in capsys.readouterr().err
    with pytest.raises(PrefrecError, match="k=0"):
        prefrec.load(run).recommend(["1"], k=0)
    with pytest.raises(PrefrecError, match="LM runs"):
        prefrec.load(run).recommend(["1"], history=["A"])


def test_not_a_run(tmp_path, capsys):
    assert main(["recommend", "--run", str(tmp_path), "--users", "1"]) == 2
    assert "no trained model" in capsys.readouterr().err
