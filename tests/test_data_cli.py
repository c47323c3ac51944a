"""``prefrec data stats`` for every registered name (real data), through ``prefrec.cli.main``."""

from __future__ import annotations

import json

import pytest

from prefrec.cli import main
from prefrec.data.registry import DATASETS


@pytest.fixture(autouse=True)
def _keep_env(monkeypatch, data_dir):
    monkeypatch.setenv("PREFREC_DATA", str(data_dir))  # main() writes it; restored after each test


def stats(capsys, name: str, data_dir) -> dict:
    assert main(["data", "stats", name, "--json", "--data-dir", str(data_dir)]) == 0
    return json.loads(capsys.readouterr().out)


def test_ml100k_table(capsys, data_dir):
    assert main(["data", "stats", "ml-100k", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "943" in out and "1,682" in out and "100,000" in out


def test_gowalla(capsys, data_dir):
    st = stats(capsys, "gowalla", data_dir)
    assert (st["users"], st["items"], st["split/train"], st["split/test"]) == (29858, 40988, 810128, 217336)


def test_new_names(capsys, data_dir):
    assert stats(capsys, "llara-lastfm", data_dir)["split/test"] == 2861
    assert stats(capsys, "llara-movielens", data_dir)["users"] == 189
    st = stats(capsys, "lastfm-hetrec", data_dir)
    assert st["users"] == 1891 and "time_range" in st
    assert stats(capsys, "lastfm-hetrec-plays", data_dir)["interactions"] == 92834


def test_every_name_loads(capsys, data_dir):
    for name in DATASETS:
        if name in ("gowalla", "gowalla-popularity", "movielens-1m", "movielens-1m-temporal", "ml-100k",
                    "amazon2014-electronic-popularity", "llara-lastfm", "llara-movielens", "lastfm-hetrec",
                    "lastfm-hetrec-plays"):
            continue  # covered above, or the same reader on a bigger file
        assert main(["data", "stats", name, "--json", "--data-dir", str(data_dir)]) == 0, name
        assert json.loads(capsys.readouterr().out)["interactions"] > 0


def test_list_and_unknown(capsys, data_dir):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "llara-lastfm" in out and "lastfm-hetrec" in out
    assert main(["data", "stats", "lastfm-hetrek"]) == 2
    assert "did you mean 'lastfm-hetrec'" in capsys.readouterr().err


def test_stats_of_a_path(capsys, tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user,item,rating\n1,2,4\n2,2,5\n")
    assert main(["data", "stats", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["interactions"] == 2
    p.write_text("user,item,rating\n1,2,4\n2,2,\n")
    assert main(["data", "stats", str(p)]) == 2
    assert "t.csv, line 3, column 'rating'" in capsys.readouterr().err
