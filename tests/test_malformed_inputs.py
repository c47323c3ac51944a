"""A corpus of malformed inputs: every one must give a one-paragraph error that names the input
and the fix, exit code 2, and no traceback (unless --debug).

The files are built in tmp_path from code (nothing big is committed). Each case is
``(id, build)``: ``build(tmp_path) -> (argv, needle)`` where ``needle`` is a string the error
must contain (usually the file name or the config key: "names the input").
Cases that expose a missing check in a reader are marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from prefrec.cli import main
from prefrec.errors import PrefrecError

MAX_MESSAGE = 1200  # a paragraph, not a dump of the input

Build = Callable[[Path], "tuple[list[str], str]"]
CASES: list = []


def case(name: str, xfail: str | None = None):
    def deco(fn: Build) -> Build:
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        CASES.append(pytest.param(fn, id=name, marks=marks))
        return fn
    return deco


# ----------------------------------------------------------------------------- helpers
GOOD_ITEM = "|".join(["0"] * 19)


NO_FILE = object()


def ml100k(tmp: Path, data: bytes | str | None = "1\t1\t5\t881250949\n2\t2\t3\t881250950\n",
           item=None) -> list[str]:
    folder = tmp / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    if item is NO_FILE:
        item = None
    elif item is None:
        item = "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|{GOOD_ITEM}\n" for i in (1, 2, 3))
    for name, content in (("u.data", data), ("u.item", item)):
        if content is not None:
            (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return ["data", "stats", "ml-100k", "--data-dir", str(tmp)]


IR_GOOD = {
    "train.tsv": "user_procid\titem_procid\n0\t0\n1\t1\n",
    "test.tsv": "user_procid\titem_procid\n0\t1\n1\t0\n",
    "user_list.tsv": "user_orgid\tuser_procid\n10\t0\n11\t1\n",
    "item_list.tsv": "item_orgid\titem_procid\n20\t0\n21\t1\n",
}


def irbench(tmp: Path, members: dict[str, str | bytes] | None = None, raw: bytes | None = None) -> list[str]:
    folder = tmp / "ir-benchmark" / "iid" / "movielens-100k"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "proc.zip"
    if raw is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for n, c in (IR_GOOD if members is None else members).items():
                zf.writestr(n, c)
        raw = buf.getvalue()
    path.write_bytes(raw)
    return ["data", "stats", "movielens-100k", "--data-dir", str(tmp)]


def table(tmp: Path, name: str, content: bytes | str) -> list[str]:
    p = tmp / name
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return ["data", "stats", str(p)]


STUDY = """\
name: bad
output_dir: {out}
cf:
  base:
    data: {{dataset: ml-100k}}
    train: {{epochs: 1}}
  losses: [bpr]
"""


def study(tmp: Path, text: str | bytes | None = None, overrides: tuple[str, ...] = ()) -> list[str]:
    p = tmp / "study.yaml"
    if text is None:
        text = STUDY.format(out=tmp / "runs")
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return ["run", str(p), *overrides]


# ----------------------------------------------------------------------------- MovieLens-100K folder
@case("ml100k-missing-folder")
def _(tmp):
    return ["data", "stats", "ml-100k", "--data-dir", str(tmp)], "u.data"


@case("ml100k-truncated-line")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\t881250949\n2\t2\n"), "u.data, line 2"


@case("ml100k-comma-separated")
def _(tmp):
    return ml100k(tmp, "1,1,5,881250949\n"), "u.data, line 1"


@case("ml100k-binary-garbage")
def _(tmp):
    return ml100k(tmp, bytes(range(256)) * 4), "u.data"


@case("ml100k-utf16")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\t881250949\n".encode("utf-16")), "u.data"


@case("ml100k-negative-user")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\t881250949\n-3\t2\t4\t881250950\n"), "u.data, line 2"


@case("ml100k-zero-item")
def _(tmp):
    return ml100k(tmp, "1\t0\t5\t881250949\n"), "u.data, line 1"


@case("ml100k-item-not-in-catalog")
def _(tmp):
    return ml100k(tmp, "1\t99\t5\t881250949\n"), "u.data, line 1"


@case("ml100k-empty-u.data")
def _(tmp):
    return ml100k(tmp, ""), "u.data"


@case("ml100k-nan-rating")
def _(tmp):
    return ml100k(tmp, "1\t1\tnan\t881250949\n"), "u.data, line 1"


@case("ml100k-inf-timestamp")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\tinf\n"), "u.data, line 1"


@case("ml100k-huge-line", xfail="readers.py _int_field (line 34) puts the whole offending value in the message "
                                 "({value!r}): a 5 MB field gives a 5 MB error; it should truncate the value")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\t" + "9" * 5_000_000 + "x\n"), "u.data, line 1"


@case("ml100k-u.item-wrong-fields")
def _(tmp):
    return ml100k(tmp, item="1|Movie|1995\n"), "u.item, line 1"


@case("ml100k-u.item-ids-out-of-order")
def _(tmp):
    return ml100k(tmp, item=f"2|B (1995)|||x|{GOOD_ITEM}\n1|A (1995)|||x|{GOOD_ITEM}\n"), "u.item, line 1"


@case("ml100k-u.item-missing")
def _(tmp):
    return ml100k(tmp, item=NO_FILE), "u.item"


# ----------------------------------------------------------------------------- IR-Benchmark zip
@case("irbench-not-a-zip")
def _(tmp):
    return irbench(tmp, raw=b"user\titem\n0\t1\n"), "proc.zip"


@case("irbench-truncated-zip")
def _(tmp):
    irbench(tmp)
    p = tmp / "ir-benchmark" / "iid" / "movielens-100k" / "proc.zip"
    return irbench(tmp, raw=p.read_bytes()[: len(p.read_bytes()) // 2]), "proc.zip"


@case("irbench-path-traversal")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "../../evil.tsv": "x"}), "evil.tsv"


@case("irbench-absolute-member")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "/etc/passwd": "x"}), "/etc/passwd"


@case("irbench-missing-member")
def _(tmp):
    return irbench(tmp, {k: v for k, v in IR_GOOD.items() if k != "test.tsv"}), "test.tsv"


@case("irbench-non-numeric-id")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "train.tsv": "u\ti\n0\tzero\n"}), "train.tsv"


@case("irbench-negative-id")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "train.tsv": "u\ti\n0\t0\n-1\t1\n"}), "train.tsv, line 3"


@case("irbench-id-out-of-range")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "test.tsv": "u\ti\n0\t7\n"}), "test.tsv, line 2"


@case("irbench-wrong-column-count")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "train.tsv": "u\ti\n0\t0\t0\n"}), "train.tsv"


@case("irbench-invalid-utf8")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "train.tsv": b"u\ti\n0\t\xff\xfe\n"}), "train.tsv"


@case("irbench-empty-test")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "test.tsv": "u\ti\n"}), "test.tsv"


# ----------------------------------------------------------------------------- generic tables
@case("csv-nan-rating")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,rating\n1,2,4\n1,3,nan\n"), "ratings.csv, line 3"


@case("csv-inf-rating")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,rating\n1,2,inf\n"), "ratings.csv, line 2"


@case("csv-no-user-column")
def _(tmp):
    return table(tmp, "ratings.csv", "who,item\n1,2\n"), "ratings.csv"


@case("csv-ragged-row")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,rating\n1,2,4\n1,3\n"), "ratings.csv, line 3"


@case("csv-empty-file")
def _(tmp):
    return table(tmp, "ratings.csv", ""), "ratings.csv"


@case("csv-bad-timestamp")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,timestamp\n1,2,yesterday\n"), "ratings.csv, line 2"


@case("csv-latin1-bytes")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,title\n1,2,Mis\xe9rables\n".encode("latin-1")), "ratings.csv"


@case("csv-huge-line", xfail="readers.py _Table._convert (line 126) puts the whole offending value in the "
                             "message ({v!r}): a 3 MB field gives a 3 MB error; it should truncate the value")
def _(tmp):
    return table(tmp, "ratings.csv", "user,item,rating\n1,2," + "7" * 3_000_000 + "x\n"), "ratings.csv, line 2"


@case("csv-gz-truncated")
def _(tmp):
    return table(tmp, "ratings.csv.gz", gzip.compress(b"user,item\n1,2\n" * 100)[:40]), "ratings.csv.gz"


@case("parquet-garbage")
def _(tmp):
    return table(tmp, "ratings.parquet", b"PAR1" + bytes(range(200))), "ratings.parquet"


# ----------------------------------------------------------------------------- S-DPO JSON
def sdpo_rec(**kw):
    rec = {"historyList": ["A", "B", "C"], "itemList": ["X", "Y"], "trueSelection": "X"}
    rec.update(kw)
    return rec


@case("sdpo-truncated-json")
def _(tmp):
    return table(tmp, "train.json", json.dumps([sdpo_rec(), sdpo_rec()])[:-30]), "train.json"


@case("sdpo-target-not-candidate")
def _(tmp):
    return table(tmp, "train.json", json.dumps([sdpo_rec(trueSelection="Z")])), "train.json, line 1"


@case("sdpo-duplicate-candidates")
def _(tmp):
    return table(tmp, "train.jsonl", json.dumps(sdpo_rec(itemList=["X", "X"])) + "\n"), "train.jsonl, line 1"


@case("sdpo-empty-history")
def _(tmp):
    return table(tmp, "train.jsonl", json.dumps(sdpo_rec(historyList=[])) + "\n"), "train.jsonl, line 1"


@case("sdpo-record-not-object")
def _(tmp):
    return table(tmp, "train.json", "[1, 2]"), "train.json"


# ----------------------------------------------------------------------------- study files / configs
@case("yaml-unknown-key")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp) + "reprot: {}\n"), "did you mean 'report'"


@case("yaml-unknown-nested-key")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp).replace("epochs: 1", "epocs: 1")), "did you mean 'cf.base.train.epochs'"


@case("yaml-wrong-type")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp) + "seed: many\n"), "seed"


@case("yaml-negative-epochs")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp).replace("epochs: 1", "epochs: -1")), "cf.base.train.epochs"


@case("yaml-syntax-error")
def _(tmp):
    return study(tmp, "name: x\ncf:\n  base: {data: [1, 2\n"), "study.yaml, line"


@case("yaml-not-a-mapping")
def _(tmp):
    return study(tmp, "- one\n- two\n"), "study.yaml"


@case("yaml-python-tag")
def _(tmp):
    return study(tmp, "name: !!python/object/apply:os.system ['echo hi']\n"), "study.yaml"


@case("yaml-binary-garbage")
def _(tmp):
    return study(tmp, b"\xff\xfe\x00garbage\x9c"), "study.yaml"


@case("yaml-missing-file")
def _(tmp):
    return ["run", str(tmp / "nope.yaml")], "nope.yaml"


@case("yaml-empty-study")
def _(tmp):
    return study(tmp, "name: empty\n"), "no stages"


@case("yaml-unknown-loss")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp).replace("[bpr]", "[bpx]")), "did you mean 'bpr'"


@case("yaml-unknown-dataset")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp).replace("ml-100k", "ml100k")), "did you mean 'ml-100k'"


@case("yaml-data-dir-missing")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp / "runs") + f"data_dir: {tmp / 'nowhere'}\n"), "u.data"


@case("yaml-bad-name")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp).replace("name: bad", "name: ../../etc")), "name"


@case("override-without-equals")
def _(tmp):
    return study(tmp, overrides=("seed",)), "key=value"


@case("override-unknown-key")
def _(tmp):
    return study(tmp, overrides=("cf.base.loss.tua=0.1",)), "did you mean 'cf.base.loss.tau'"


# ----------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("build", CASES)
def test_malformed_input(build, tmp_path, capsys):
    argv, needle = build(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    msgs = [ln for ln in err.splitlines() if ln.startswith("prefrec: error:")]
    assert len(msgs) == 1, err
    msg = msgs[0]
    assert len(msg) <= MAX_MESSAGE, f"message of {len(msg)} chars: {msg[:300]}..."
    assert needle in msg, msg
    assert re.search(r"Fix: \S", msg), msg


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(PrefrecError):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])
