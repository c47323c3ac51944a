"""One test per failure kind: the message names the file, the line and the fix."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import pytest

from prefrec.data import readers as R
from prefrec.data.interactions import ItemCatalog
from prefrec.errors import DataError

TAGGED_HEADER = "userID\tartistID\ttagID\tday\tmonth\tyear\n"
ARTISTS = "id\tname\turl\tpictureURL\n1\tMALICE MIZER\tu\tp\n2\tDiary of Dreams\tu\tp\n"
PLAYS = "userID\tartistID\tweight\n2\t1\t10\n"


def hetrec(tmp_path: Path, tagged: str = TAGGED_HEADER + "2\t1\t13\t1\t4\t2009\n", artists: str | bytes = ARTISTS,
           plays: str = PLAYS) -> Path:
    d = tmp_path / "lastfm"
    d.mkdir()
    (d / "user_taggedartists.dat").write_text(tagged)
    (d / "artists.dat").write_bytes(artists if isinstance(artists, bytes) else artists.encode())
    (d / "user_artists.dat").write_text(plays)
    return d


def raises(fn, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        fn(*args, **kw)
    return str(e.value)


def test_good_hetrec_fixture_reads(tmp_path):
    ds = R.read_lastfm_hetrec(hetrec(tmp_path))
    assert len(ds.interactions) == 1 and ds.interactions.rating.tolist() == [10.0]


def test_missing_column(tmp_path):
    d = hetrec(tmp_path, tagged="userID\tartistID\ttagID\tday\tmonth\n2\t1\t13\t1\t4\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "user_taggedartists.dat, line 1" in msg and "missing column(s) 'year'" in msg
    assert "Fix: HetRec Last.fm files are tab-separated" in msg


def test_wrong_separator(tmp_path):
    d = hetrec(tmp_path, tagged=TAGGED_HEADER.replace("\t", ",") + "2,1,13,1,4,2009\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "user_taggedartists.dat, line 1" in msg and "the separator is not tab" in msg
    assert "Fix: pass sep=','" in msg
    p = tmp_path / "semi.csv"
    p.write_text("user;item\n1;2\n")
    msg = raises(R.read_table, p, sep=",")
    assert "semi.csv, line 1" in msg and "separator is not ','" in msg and "sep=';'" in msg


def test_wrong_field_count(tmp_path):
    d = hetrec(tmp_path, tagged=TAGGED_HEADER + "2\t1\t13\t1\t4\t2009\n2\t1\t13\t1\t4\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "user_taggedartists.dat, line 3" in msg and "expected 6 tab-separated fields, found 5" in msg
    assert "Fix:" in msg


def test_wrong_encoding(tmp_path):
    d = hetrec(tmp_path, artists=ARTISTS.encode() + "3\tBjörk\tu\tp\n".encode("latin-1"))
    msg = raises(R.read_lastfm_hetrec, d)
    assert "artists.dat, line 4" in msg and "not valid utf-8" in msg and "Fix: re-save the file as utf-8" in msg


def test_non_numeric_id(tmp_path):
    d = hetrec(tmp_path, tagged=TAGGED_HEADER + "2\t1\t13\t1\t4\t2009\n\nabc\t1\t13\t1\t4\t2009\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "user_taggedartists.dat, line 4, column 'userID'" in msg and "'abc' is not an integer" in msg
    assert "Fix: ids and counts in HetRec files are integers" in msg


def test_non_numeric_id_in_irbench_zip(tmp_path):
    p = tmp_path / "proc.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("train.tsv", "user_procid\titem_procid\n0\t0\n0\tx1\n")
        z.writestr("test.tsv", "user_procid\titem_procid\n0\t0\n")
        z.writestr("user_list.tsv", "user_orgid\tuser_procid\nu\t0\n")
        z.writestr("item_list.tsv", "item_orgid\titem_procid\ni\t0\n")
    msg = raises(R.read_irbench_zip, p)
    assert "proc.zip:train.tsv, line 3, column 'item_procid'" in msg and "'x1' is not an integer" in msg
    assert "Fix: user and item columns must be integer processed ids" in msg


def test_impossible_date(tmp_path):
    d = hetrec(tmp_path, tagged=TAGGED_HEADER + "2\t1\t13\t31\t4\t2009\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "user_taggedartists.dat, line 2" in msg and "31/4/2009" in msg and "Fix: day, month and year" in msg


def test_duplicate_id_in_artist_catalog(tmp_path):
    d = hetrec(tmp_path, artists=ARTISTS + "1\tAgain\tu\tp\n")
    msg = raises(R.read_lastfm_hetrec, d)
    assert "artists.dat, line 4, column 'id'" in msg and "duplicate artist id 1 (also on line 2)" in msg
    assert "Fix: each id must appear once in a catalog" in msg


def test_duplicate_id_in_id2name(tmp_path):
    p = tmp_path / "id2name.txt"
    p.write_text("0::a\n1::b\n1::c\n")
    msg = raises(R.read_id2name, p)
    assert "id2name.txt, line 3" in msg and "duplicate item id 1" in msg and "Fix: each id must appear once" in msg


def test_llara_item_missing_from_catalog(tmp_path):
    d = tmp_path / "llara"
    (d / "derived-jsonl").mkdir(parents=True)
    (d / "id2name.txt").write_text("0::a\n1::b\n2::c\n")
    for split in ("train", "val", "test"):
        body = '{"history": [0, 1], "next": 2}\n{"history": [0, 1, 7], "next": 2}\n'
        (d / "derived-jsonl" / f"{split}.jsonl.gz").write_bytes(gzip.compress(body.encode()))
    msg = raises(R.read_llara_lastfm, d)
    assert "train.jsonl.gz, line 2, column 'history'" in msg and "item 7 is not in the catalog" in msg
    assert "Fix: use the id2name/u.item catalog" in msg


def sdpo(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "prefs.json"
    p.write_text(body)
    return p


GOOD = '{"historyList": "a::b", "itemList": ["c", "d"], "trueSelection": "d"}'


def test_history_item_missing_from_catalog(tmp_path):
    p = sdpo(tmp_path, f'[\n  {GOOD},\n  {{"historyList": "a::bb", "itemList": ["c", "d"], "trueSelection": "c"}}\n]')
    msg = raises(R.read_sdpo_json, p, catalog=ItemCatalog(titles=["a", "b", "c", "d"]))
    assert "prefs.json, line 3, historyList" in msg and "item 'bb' is not in the catalog (closest: 'b')" in msg
    assert "Fix: add the item to the catalog or correct its spelling" in msg


def test_target_not_among_candidates(tmp_path):
    p = sdpo(tmp_path, GOOD + "\n" + '{"historyList": "a", "itemList": ["c", "d"], "trueSelection": "e"}\n')
    msg = raises(R.read_sdpo_json, p)
    assert "prefs.json, line 2" in msg and "trueSelection 'e' is not among the 2 candidates" in msg
    assert "Fix: the itemList must contain the target exactly once" in msg


def test_duplicate_candidates(tmp_path):
    p = sdpo(tmp_path, '[{"historyList": "a", "itemList": ["c", "d", "c"], "trueSelection": "d"}]')
    msg = raises(R.read_sdpo_json, p)
    assert "prefs.json, line 1" in msg and "duplicate candidate 'c'" in msg and "Fix: each candidate must appear once" in msg


def test_empty_history(tmp_path):
    p = sdpo(tmp_path, f'[{GOOD},\n{GOOD},\n{{"historyList": "", "itemList": ["c"], "trueSelection": "c"}}]')
    msg = raises(R.read_sdpo_json, p)
    assert "prefs.json, line 3" in msg and "empty history" in msg and "Fix: drop records without a history" in msg


def test_empty_input(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    msg = raises(R.read_table, p)
    assert "empty.csv" in msg and "the file is empty" in msg and "Fix: pass columns=" in msg
    p.write_text("user,item\n")
    msg = raises(R.read_table, p)
    assert "empty.csv" in msg and "no data rows" in msg
    msg = raises(R.read_sdpo_json, sdpo(tmp_path, "[]"))
    assert "prefs.json" in msg and "no records" in msg and "Fix:" in msg


def test_nan_rating(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n1,2,4\n1,3,nan\n")
    msg = raises(R.read_table, p)
    assert "r.csv, line 3, column 'rating'" in msg and "NaN" in msg and "Fix: give every row a finite rating" in msg


def test_nan_rating_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "r.parquet"
    pq.write_table(pa.table({"user": [1, 2], "item": [1, 2], "rating": [1.0, float("nan")]}), p)
    msg = raises(R.read_table, p)
    assert "r.parquet, row 2, column 'rating'" in msg and "Fix: give every row a finite rating" in msg


def test_non_numeric_rating(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n1,2,4\n1,3,good\n")
    msg = raises(R.read_table, p)
    assert "r.csv, line 3, column 'rating'" in msg and "'good' is not a number" in msg


def test_table_missing_user_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("person,movieId\n1,2\n")
    msg = raises(R.read_table, p)
    assert "t.csv, line 1" in msg and "no user column" in msg and "Fix: pass columns=" in msg
    msg = raises(R.read_table, p, columns={"user": "who"})
    assert "missing column 'who' (for user)" in msg


def test_bad_timestamp(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("user,item,timestamp\n1,2,5\n1,3,yesterday\n")
    msg = raises(R.read_table, p)
    assert "t.csv, line 3, column 'timestamp'" in msg and "Fix: use unix seconds or YYYY-MM-DD" in msg


def test_invalid_json_line(tmp_path):
    p = sdpo(tmp_path, GOOD + "\n{oops\n")
    msg = raises(R.read_sdpo_json, p)
    assert "prefs.json, line 2" in msg and "invalid JSON" in msg


def test_missing_file(tmp_path):
    msg = raises(R.read_lastfm_hetrec, tmp_path)
    assert "artists.dat" in msg and "not found" in msg and "Fix: point --data-dir" in msg


def test_ml100k_wrong_separator_and_bad_id(tmp_path, data_dir):
    (tmp_path / "u.item").write_bytes((data_dir / "ml-100k" / "u.item").read_bytes())
    (tmp_path / "u.data").write_text("1\t1\t5\t874965758\n1,2,3,874965758\n")
    msg = raises(R.read_ml100k, tmp_path)
    assert "u.data, line 2" in msg and "found 1 (the line looks ','-separated)" in msg and "Fix: u.data must be" in msg
    (tmp_path / "u.data").write_text("1\t1\t5\t874965758\n\n1\t9999\t3\t874965758\n")
    msg = raises(R.read_ml100k, tmp_path)
    assert "u.data, line 3" in msg and "item 9999 is not in u.item" in msg
