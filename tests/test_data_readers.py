"""Readers on the real data (counts from data/README.md) and on the tiny hand-made fixtures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from prefrec.data import readers as R
from prefrec.data.registry import DATASETS, load_dataset

FIX = Path(__file__).resolve().parent / "fixtures" / "data"


def test_irbench_gowalla_counts_and_speed(data_dir):
    R.read_irbench_zip(data_dir / "ir-benchmark/iid/amazon2014-beauty/proc.zip")  # warm pyarrow import
    t = time.perf_counter()
    ds = R.read_irbench_zip(data_dir / "ir-benchmark/iid/gowalla/proc.zip")
    elapsed = time.perf_counter() - t
    st = ds.stats()
    assert (st["users"], st["items"], st["split/train"], st["split/test"]) == (29858, 40988, 810128, 217336)
    assert elapsed < 1.5  # was ~2.7 s with a Python line loop; ~0.3 s now


def test_irbench_orgids_follow_procids(data_dir):
    ds = R.read_irbench_zip(data_dir / "ir-benchmark/iid/amazon2014-beauty/proc.zip")
    assert ds.interactions.item_ids[0] == "B0000CC64W"
    assert ds.interactions.user_ids[0] == "A100WO06OQR8BQ"


def test_lastfm_hetrec_tagged(data_dir):
    ds = R.read_lastfm_hetrec(data_dir / "lastfm-hetrec2011")
    x = ds.interactions
    pairs = x.user.astype(np.int64) * x.n_items + x.item
    assert np.unique(pairs).size == len(x)  # one row per (user, artist)
    assert x.has_time and x.has_rating
    assert len(ds.catalog) == x.n_items
    # user 2 tagged artist 52 on 1/4/2009 first -> UTC midnight
    u = int(np.flatnonzero(x.user_ids == "2")[0])
    i = int(np.flatnonzero(x.item_ids == "52")[0])
    row = np.flatnonzero((x.user == u) & (x.item == i))[0]
    assert x.timestamp[row] == 1238544000.0
    assert x.rating[row] == 11690  # play count from user_artists.dat
    assert ds.catalog.title(i) == "Morcheeba"
    keep = R.read_lastfm_hetrec(data_dir / "lastfm-hetrec2011", unknown_artists="keep", plays=False)
    assert len(keep.interactions) > len(x) and keep.interactions.rating is None


def test_lastfm_hetrec_plays(data_dir):
    ds = R.read_lastfm_hetrec(data_dir / "lastfm-hetrec2011", source="plays")
    st = ds.stats()
    assert (st["users"], st["items"], st["interactions"]) == (1892, 17632, 92834)


def test_llara_lastfm_rows_and_users(data_dir):
    ds = R.read_llara_lastfm(data_dir / "llara-lastfm")
    assert {k: len(v) for k, v in ds.rows.items()} == {"train": 50800, "val": 3133, "test": 2861}
    assert sum(len(r.history) >= 3 for r in ds.rows["train"]) == 47872
    assert sum(len(r.history) >= 3 for r in ds.rows["val"]) == 2767
    assert sum(len(r.history) >= 3 for r in ds.rows["test"]) == 2495
    assert len({r.user for r in ds.rows["train"]}) == 976
    assert len({r.user for r in ds.rows["test"]}) == 122
    assert len(ds.catalog) == 4606 and ds.catalog.title(392) == "Kylie Minogue"
    assert len(ds.splits["train"]) == 50800  # every row adds its next item once


def test_llara_movielens(data_dir):
    ds = R.read_llara_movielens(data_dir / "llara-movielens", data_dir / "ml-100k")
    assert {k: len(v) for k, v in ds.rows.items()} == {"val": 94, "test": 95}
    r = ds.rows["test"][0]
    assert r.next == 3 and ds.catalog.title(r.next) == "Get Shorty (1995)"
    assert r.history_ratings is not None and r.next_rating == 4.0


def test_sdpo_json_array_with_catalog():
    cat = R.read_id2name(FIX / "catalog_small.txt")
    samples = R.read_sdpo_json(FIX / "sdpo_small.json", catalog=cat)
    assert len(samples) == 2
    s = samples[0]
    assert s.prompt == "" and s.history == ["Morcheeba", "Enigma", "Café Del Mar"]
    assert s.target == "Björk" and s.target_index == 2
    assert s.history_ids == [0, 1, 2] and s.item_ids == [3, 4, 5, 6]
    assert samples[1].history_ids == [3, 6, 4]


def test_sdpo_jsonl(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"historyList": "a::b", "itemList": ["c", "d"], "trueSelection": "d"}\n\n'
                 '{"historyList": ["c"], "itemList": ["a", "b"], "trueSelection": "a"}\n')
    s = R.read_sdpo_json(p)
    assert [x.target_index for x in s] == [1, 0] and s[0].item_ids is None


def test_read_table_csv_sniffed_and_dates():
    ds = R.read_table(FIX / "interactions.csv")
    x = ds.interactions
    assert (x.n_users, x.n_items, len(x)) == (2, 3, 4)
    assert x.rating.tolist() == [4.0, 3.5, 5.0, 2.0]
    assert x.timestamp[3] == 1577836800.0  # 2020-01-01 UTC
    assert ds.catalog.titles == ["Heat (1995)", "Up, Up and Away (2000)", "Zed (1990)"]


def test_read_table_explicit_columns_tsv(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("who\twhat\twhen\na\tx\t3\nb\ty\t1\n")
    ds = R.read_table(p, columns={"user": "who", "item": "what", "timestamp": "when"}, sep="\t")
    assert ds.interactions.user_ids.tolist() == ["a", "b"] and ds.interactions.timestamp.tolist() == [3, 1]


def test_read_table_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0]}), p)
    ds = R.read_table(p)
    assert len(ds.interactions) == 3 and ds.interactions.rating.tolist() == [1.0, 2.0, 3.0]
    assert load_dataset(str(p)).interactions.n_items == 2  # via read_path


def test_read_path_dispatch(data_dir):
    assert R.read_path(data_dir / "ml-100k").name == "ml-100k"
    assert R.read_path(FIX / "interactions.csv").interactions.n_users == 2
    assert R.read_path(FIX / "sdpo_small.json").interactions.n_users == 2


@pytest.mark.parametrize("name", ["lastfm-hetrec", "llara-lastfm", "llara-movielens"])
def test_registry_has_new_names(name):
    assert name in DATASETS
