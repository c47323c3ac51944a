"""Property test: random bytes and random small tables fed to every reader (and the config and
metrics-log loaders) raise nothing but the project's own :class:`PrefrecError`.

Hypothesis runs derandomized (the same examples every run: deterministic under load, no
flaky shrinking across runs) with a fixed, small number of examples per reader, no deadline.
Tables are drawn cell by cell from a vocabulary of troublesome values (ids, negatives, NaN,
inf, huge ints, empty strings, separators, quotes, non-ASCII, NUL), so most examples get past
the first syntax check and reach the deeper checks (ids, ranges, joins).
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefrec.data import readers as R
from prefrec.data.interactions import ItemCatalog
from prefrec.errors import PrefrecError

SETTINGS = settings(derandomize=True, max_examples=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CELLS = st.sampled_from(["0", "1", "2", "3", "17", "-1", "0.5", "nan", "inf", "-inf", "1e300",
                         "99999999999999999999999", "", " ", "a", "x y", '"q"', '"', "é", "\x00", ",", "\t",
                         "|", "2009", "12", "31", "[1, 2]", "null", "true"])


GOOD = st.sampled_from(["1", "2", "3", "4", "5"])
"""Valid-looking ids: most cells are these, so a table gets past syntax checks to the deeper ones."""


def _table(sep: str, n_cols: int) -> st.SearchStrategy[str]:
    cell = st.one_of(GOOD, GOOD, GOOD, CELLS)  # one_of picks a branch uniformly: 3/4 good cells
    width = st.sampled_from([n_cols] * 8 + [max(n_cols - 1, 1), n_cols + 1])  # mostly the right width
    row = width.flatmap(lambda w: st.lists(cell, min_size=w, max_size=w)).map(sep.join)
    return st.lists(row, min_size=0, max_size=6).map(lambda rows: "\n".join(rows) + "\n")


def _only_ours(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except PrefrecError:
        pass


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path


BYTES = st.binary(max_size=300)


# ----------------------------------------------------------------------------- random bytes
@SETTINGS
@given(data=BYTES, suffix=st.sampled_from([".csv", ".tsv", ".csv.gz", ".json", ".jsonl", ".zip", ".parquet",
                                           ".txt", ".jsonl.gz", ".json.gz"]))
def test_read_path_on_random_bytes(tmp_path, data, suffix):
    _only_ours(R.read_path, _write(tmp_path / f"f{suffix}", data))


@SETTINGS
@given(u_data=BYTES, u_item=BYTES)
def test_ml100k_on_random_bytes(tmp_path, u_data, u_item):
    d = tmp_path / "ml"
    _write(d / "u.data", u_data)
    _write(d / "u.item", u_item)
    _only_ours(R.read_ml100k, d)


@SETTINGS
@given(tagged=BYTES, artists=BYTES, plays=BYTES)
def test_hetrec_on_random_bytes(tmp_path, tagged, artists, plays):
    d = tmp_path / "h"
    _write(d / "user_taggedartists.dat", tagged)
    _write(d / "artists.dat", artists)
    _write(d / "user_artists.dat", plays)
    _only_ours(R.read_lastfm_hetrec, d)


@SETTINGS
@given(names=BYTES, rows=BYTES, gz=st.booleans())
def test_llara_on_random_bytes(tmp_path, names, rows, gz):
    _only_ours(R.read_id2name, _write(tmp_path / "id2name.txt", names))
    p = _write(tmp_path / ("r.jsonl.gz" if gz else "r.jsonl"), gzip.compress(rows) if gz else rows)
    _only_ours(R.read_llara_rows, p, 5)


@SETTINGS
@given(data=BYTES)
def test_config_and_metrics_loaders_on_random_bytes(tmp_path, data):
    from prefrec.cf.config import CFConfig
    from prefrec.config import load_config
    from prefrec.rundir import read_jsonl

    _only_ours(load_config, CFConfig, _write(tmp_path / "c.yaml", data))
    _only_ours(read_jsonl, _write(tmp_path / "m.jsonl", data))


# ----------------------------------------------------------------------------- random small tables
U_ITEM = "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{'|'.join(['0'] * 19)}\n" for i in range(1, 6))


@SETTINGS
@given(u_data=_table("\t", 4), u_item=st.one_of(st.just(U_ITEM), _table("|", 24)))
def test_ml100k_on_random_tables(tmp_path, u_data, u_item):
    d = tmp_path / "ml"
    _write(d / "u.data", u_data)
    _write(d / "u.item", u_item)
    _only_ours(R.read_ml100k, d)


@SETTINGS
@given(body=_table(",", 4), header=st.sampled_from(["user,item,rating,timestamp", "userId,movieId", "u,i",
                                                     "user,item,title,timestamp", "user;item", ""]),
       gz=st.booleans())
def test_read_table_on_random_tables(tmp_path, body, header, gz):
    text = (header + "\n" if header else "") + body
    raw = text.encode("utf-8", "surrogatepass")
    _only_ours(R.read_table, _write(tmp_path / ("t.csv.gz" if gz else "t.csv"), gzip.compress(raw) if gz else raw))


@SETTINGS
@given(tables=st.fixed_dictionaries({n: _table("\t", 2) for n in R.IRBENCH_FILES}),
       headers=st.sampled_from([True, True, True, False]), drop=st.sampled_from([None] * 6 + list(R.IRBENCH_FILES)), good_maps=st.booleans())
def test_irbench_on_random_tables(tmp_path, tables, headers, drop, good_maps):
    if good_maps:  # valid id maps (procids 0..5), so random train/test reach the range checks
        tables.update({f"{w}_list.tsv": "".join(f"{10 + i}\t{i}\n" for i in range(6)) for w in ("user", "item")})
    heads = {"train.tsv": "user_procid\titem_procid\n", "test.tsv": "user_procid\titem_procid\n",
             "user_list.tsv": "user_orgid\tuser_procid\n", "item_list.tsv": "item_orgid\titem_procid\n"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, body in tables.items():
            if n != drop:
                zf.writestr(n, (heads[n] if headers else "") + body)
    _only_ours(R.read_irbench_zip, _write(tmp_path / "proc.zip", buf.getvalue()))


@SETTINGS
@given(tagged=_table("\t", 6), artists=_table("\t", 4), plays=_table("\t", 3))
def test_hetrec_on_random_tables(tmp_path, tagged, artists, plays):
    d = tmp_path / "h"
    _write(d / "user_taggedartists.dat", "userID\tartistID\ttagID\tday\tmonth\tyear\n" + tagged)
    _write(d / "artists.dat", "id\tname\turl\tpictureURL\n" + (artists if artists.strip() else
                                                                "".join(f"{i}\tA{i}\tu\tp\n" for i in range(1, 6))))
    _write(d / "user_artists.dat", "userID\tartistID\tweight\n" + plays)
    _only_ours(R.read_lastfm_hetrec, d)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 30) | st.sampled_from([1e300, -0.0, 2**70])
                           | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["history", "candidates", "target", "answer", "input", "output",
                                                "historyList", "itemList", "trueSelection", "x"]), inner, max_size=5),
                           max_leaves=20)


@SETTINGS
@given(records=st.lists(JSON_VALUES, max_size=4), lines=st.booleans())
def test_json_readers_on_random_records(tmp_path, records, lines):
    import json

    text = "\n".join(json.dumps(r) for r in records) if lines else json.dumps(records)
    p = _write(tmp_path / ("p.jsonl" if lines else "p.json"), text)
    _only_ours(R.read_sdpo_json, p, ItemCatalog(titles=[f"T{i}" for i in range(5)]))
    _only_ours(R.read_llara_rows, _write(tmp_path / "r.jsonl", text if lines else text.replace("\n", " ")), 5)
    _only_ours(R.read_path, p)


@SETTINGS
@given(cols=st.dictionaries(st.sampled_from(["user", "item", "rating", "timestamp", "title", "x"]),
                            st.sampled_from(["int", "float", "str", "null", "nan"]), min_size=1, max_size=5),
       n=st.integers(0, 4))
def test_parquet_on_random_tables(tmp_path, cols, n):
    import pyarrow as pa
    import pyarrow.parquet as pq

    make = {"int": lambda i: i, "float": lambda i: i + 0.5, "str": lambda i: f"s{i}", "null": lambda i: None,
            "nan": lambda i: float("nan") if i % 2 else 1.0}
    table = pa.table({c: [make[k](i) for i in range(n)] for c, k in cols.items()})
    pq.write_table(table, tmp_path / "t.parquet")
    _only_ours(R.read_table, tmp_path / "t.parquet")


def test_property_tests_cover_every_reader():
    """A new public reader must be added here (and to a property test above)."""
    covered = {"read_ml100k", "read_irbench_zip", "read_lastfm_hetrec", "read_id2name", "read_llara_rows",
               "read_llara_lastfm", "read_llara_movielens", "read_sdpo_json", "read_table", "read_path"}
    public = {n for n in dir(R) if n.startswith("read_") and callable(getattr(R, n))}
    assert public <= covered, public - covered


@pytest.mark.parametrize("gz", [False, True])
def test_llara_lastfm_folder_with_random_rows(tmp_path, gz):
    """read_llara_lastfm / read_llara_movielens reach read_id2name + read_llara_rows (covered above)."""
    d = tmp_path / "ll"
    _write(d / "id2name.txt", "0::A\n1::B\n")
    for s in ("train", "val", "test"):
        _write(d / "derived-jsonl" / f"{s}.jsonl.gz", gzip.compress(b'{"x": 1}\n'))
    _only_ours(R.read_llara_lastfm, d)
    _only_ours(R.read_llara_movielens, d, tmp_path / "no-ml")
