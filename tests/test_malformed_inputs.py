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


@case("ml100k-huge-line")
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


@case("csv-huge-line")
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


# ============================================================================= issue 16 findings
# Each case below reproduces one finding of issue 16 (a traceback, a silently wrong result, an
# unclear message or a hang) or a close variant of it.

CF_YAML = """\
name: t
output_dir: {out}
data: {{dataset: ml-100k}}
model: {{dim: 4}}
train: {{epochs: 2, batch_size: 32, negatives: 2, ks: [5], select_metric: NDCG@5, eval_every: 1, threads: 1,
        keep_checkpoints: 2}}
"""


def cf(tmp: Path, *over: str, text: str | None = None) -> list[str]:
    """``prefrec train-cf`` on a tiny ml-100k-shaped folder (trains in well under a second)."""
    from test_experiment import make_tiny_ml100k

    data = make_tiny_ml100k(tmp / "data", n_users=12, n_items=10, per_user=6)
    p = tmp / "cf.yaml"
    p.write_text(text if text is not None else CF_YAML.format(out=tmp / "runs"))
    return ["train-cf", "--config", str(p), "--data-dir", str(data), *over]


def trained(tmp: Path) -> tuple[list[str], Path]:
    """A finished tiny CF run: (its argv, its folder)."""
    argv = cf(tmp)
    assert main(["-q", *argv]) == 0
    return argv, tmp / "runs" / "t"


def zip_bytes(members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for n, c in members.items():
            zf.writestr(n, c)
    return buf.getvalue()


def patch_central(raw: bytes, member: str, offset: int, value: bytes) -> bytes:
    """Overwrite bytes of ``member``'s central-directory and local headers (flags, method)."""
    out = bytearray(raw)
    name = member.encode()
    for sig, base in ((b"PK\x01\x02", 0), (b"PK\x03\x04", 0)):
        pos = 0
        while (pos := out.find(sig, pos)) != -1:
            hdr_name_at = pos + (46 if sig == b"PK\x01\x02" else 30)
            if out[hdr_name_at:hdr_name_at + len(name)] == name:
                shift = offset if sig == b"PK\x01\x02" else offset - 2  # local headers lack 'version made by'
                out[pos + shift:pos + shift + len(value)] = value
            pos += 4
    return bytes(out)


# ----------------------------------------------------------------------------- run folders
@case("run-name-dotdot-escape")
def _(tmp):
    return cf(tmp, "name=../../x"), "name"


@case("run-name-absolute")
def _(tmp):
    return cf(tmp, f"name={tmp / 'abs'}"), "name"


@case("run-name-dotdot")
def _(tmp):
    return cf(tmp, "name=.."), "name"


@case("run-name-with-slash")
def _(tmp):
    return cf(tmp, "name=a/b"), "name"


@case("run-name-hidden")
def _(tmp):
    return cf(tmp, "name=.x"), "name"


@case("output-dir-is-a-file")
def _(tmp):
    (tmp / "afile").write_text("x")
    return cf(tmp, f"output_dir={tmp / 'afile'}"), "afile"


@case("output-dir-under-a-file")
def _(tmp):
    (tmp / "afile").write_text("x")
    return cf(tmp, f"output_dir={tmp / 'afile' / 'sub'}"), "afile"


@case("run-reused-without-resume")
def _(tmp):
    argv, run = trained(tmp)
    return argv + ["train.epochs=0"], "already holds a run"


@case("run-resume-changed-config")
def _(tmp):
    argv, run = trained(tmp)
    return argv + ["--resume", "train.lr=0.5"], "train.lr: 0.1 -> 0.5"


@case("run-resume-fewer-epochs-than-checkpoint")
def _(tmp):
    argv, run = trained(tmp)
    return argv + ["--resume", "train.epochs=1"], "train.epochs"


@case("run-overwrite-and-resume")
def _(tmp):
    return cf(tmp, "--overwrite", "--resume"), "--overwrite"


@case("run-every-checkpoint-pickled")
def _(tmp):
    import pickle

    argv, run = trained(tmp)
    for ck in (run / "checkpoints").glob("step-*"):
        (ck / "weights.safetensors").write_bytes(pickle.dumps({"a": list(range(10))}))
    return argv + ["--resume"], "checkpoints"


@case("run-every-state-json-truncated")
def _(tmp):
    argv, run = trained(tmp)
    for ck in (run / "checkpoints").glob("step-*"):
        (ck / "state.json").write_text('{"step": 1, "ep')
    return argv + ["--resume"], "checkpoints"


@case("run-every-skeleton-garbage")
def _(tmp):
    argv, run = trained(tmp)
    for ck in (run / "checkpoints").glob("step-*"):
        (ck / "skeleton.json").write_bytes(b"\xff\xfe")
    return argv + ["--resume"], "checkpoints"


@case("run-checkpoint-shapes-differ")
def _(tmp):
    argv, run = trained(tmp)
    (run / "config.yaml").unlink()
    return argv + ["--resume", "model.dim=8"], "checkpoints"


@case("run-stored-config-garbage")
def _(tmp):
    argv, run = trained(tmp)
    (run / "config.yaml").write_text("a: [1, 2\n")
    return argv + ["--resume"], "config.yaml"


@case("run-metrics-line-torn-in-the-middle")
def _(tmp):
    argv, run = trained(tmp)
    m = run / "metrics.jsonl"
    m.write_text('{"epoch": 0, "split": "da\n' + m.read_text())
    return argv + ["--resume"], "metrics.jsonl, line 1"


@case("run-best-weights-pickled")
def _(tmp):
    import pickle

    argv, run = trained(tmp)
    (run / "best.safetensors").write_bytes(pickle.dumps([1, 2, 3]))
    return ["recommend", "--run", str(run), "--users", "1", "--data-dir", str(tmp / "data")], "best.safetensors"


@case("recommend-k-zero")
def _(tmp):
    argv, run = trained(tmp)
    return ["recommend", "--run", str(run), "--users", "1", "--k", "0", "--data-dir", str(tmp / "data")], "--k"


@case("recommend-k-negative")
def _(tmp):
    argv, run = trained(tmp)
    return ["recommend", "--run", str(run), "--users", "1", "--k", "-3", "--data-dir", str(tmp / "data")], "--k"


@case("recommend-run-missing")
def _(tmp):
    return ["recommend", "--run", str(tmp / "nope"), "--users", "1"], "nope"


@case("recommend-run-is-a-file")
def _(tmp):
    (tmp / "f").write_text("x")
    return ["recommend", "--run", str(tmp / "f"), "--users", "1"], "f"


@case("study-name-dotdot")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp / "runs").replace("name: bad", "name: '..'")), "name"


@case("study-preset-label-escapes")
def _(tmp):
    return study(tmp, STUDY.format(out=tmp / "runs").replace(
        "losses: [bpr]", "losses: ['../x']\n  presets: {'../x': {loss.name: bpr}}")), "cf.losses"


@case("study-lm-label-escapes")
def _(tmp):
    return study(tmp, f"name: ok\noutput_dir: {tmp / 'runs'}\nlm: {{sft: {{}}, preference: {{'../p': {{loss: sdpo}}}}}}\n",
                 ("--dry-run",)), "lm.preference"


@case("study-output-dir-is-a-file")
def _(tmp):
    (tmp / "afile").write_text("x")
    return study(tmp, STUDY.format(out=tmp / "afile")), "afile"


# ----------------------------------------------------------------------------- seeds and numbers
@case("seed-negative")
def _(tmp):
    return cf(tmp, "seed=-1"), "seed"


@case("seed-2**70")
def _(tmp):
    return cf(tmp, f"seed={2**70}"), "seed"


@case("split-seed-negative")
def _(tmp):
    return cf(tmp, "data.split_seed=-5"), "data.split_seed"


@case("study-seed-negative")
def _(tmp):
    return study(tmp, overrides=("seed=-1",)), "seed"


@case("sft-seed-2**70")
def _(tmp):
    return ["sft", f"seed={2**70}", f"output_dir={tmp / 'sft'}"], "seed"


@case("sdpo-seed-negative")
def _(tmp):
    return ["sdpo", "seed=-2", f"output_dir={tmp / 'sdpo'}"], "seed"


@case("baseline-seed-negative")
def _(tmp):
    return ["baseline", "--model", "random", "--seed", "-1", "--run-dir", str(tmp / "b")], "seed"


for _v in ("nan", "1.5", "-0.2", "0", "inf", "1"):
    case(f"test-fraction-{_v}")(lambda tmp, v=_v: (cf(tmp, f"data.test_fraction={v}"), "data.test_fraction"))
for _v in ("1.0", "-0.1", "nan"):
    case(f"valid-fraction-{_v}")(lambda tmp, v=_v: (cf(tmp, f"data.valid_fraction={v}"), "data.valid_fraction"))
for _v in ("0", "2", "nan"):
    case(f"noise-fraction-{_v}")(lambda tmp, v=_v: (cf(tmp, f"data.noise_fraction={v}"), "data.noise_fraction"))
for _v in ("1000000000", "0", "-3"):
    case(f"model-dim-{_v}")(lambda tmp, v=_v: (cf(tmp, f"model.dim={v}"), "model.dim"))
for _k, _v in (("train.lr", "nan"), ("train.lr", "inf"), ("train.lr", "-1"), ("train.weight_decay", "nan"),
               ("train.batch_size", "0"), ("train.negatives", "0"), ("train.epochs", "-1"), ("train.eval_every", "0"),
               ("loss.tau", "0"), ("loss.tau", "-1"), ("loss.tau", "nan"), ("train.epochs", "abc"),
               ("train.keep_checkpoints", "0"), ("data.noise_p", "1")):
    case(f"cf-{_k}-{_v}")(lambda tmp, k=_k, v=_v: (cf(tmp, f"{k}={v}"), k))


@case("cf-ks-zero")
def _(tmp):
    return cf(tmp, "train.ks=[0]", "train.select_metric=NDCG@0"), "train.ks"


@case("cf-ks-empty")
def _(tmp):
    return cf(tmp, "train.ks=[]"), "train.ks"


@case("override-scalar-for-section")
def _(tmp):
    return cf(tmp, "train=5"), "train"


@case("override-deep-nesting")
def _(tmp):
    return cf(tmp, "train.ks=" + "[" * 300 + "]" * 300), "override"


# ----------------------------------------------------------------------------- MovieLens-100K
@case("ml100k-stray-huge-user-id")
def _(tmp):
    return ml100k(tmp, "1\t1\t5\t881250949\n3000000\t2\t3\t881250950\n"), "u.data, line 2"


@case("ml100k-u.data-is-a-folder")
def _(tmp):
    (tmp / "ml-100k" / "u.data").mkdir(parents=True)
    return ml100k(tmp, None), "u.data"


@case("ml100k-u.item-is-a-folder")
def _(tmp):
    (tmp / "ml-100k" / "u.item").mkdir(parents=True)
    return ml100k(tmp, item=NO_FILE), "u.item"


@case("ml100k-nul-bytes")
def _(tmp):
    return ml100k(tmp, b"1\t1\t5\t881250949\n2\t\x00\x00\t3\t881250950\n"), "u.data"


@case("ml100k-decimal-rating")
def _(tmp):
    return ml100k(tmp, "1\t1\t4.5\t881250949\n"), "u.data, line 1"


@case("ml100k-float-user-id")
def _(tmp):
    return ml100k(tmp, "1.0\t1\t4\t881250949\n"), "u.data, line 1"


@case("ml100k-five-fields")
def _(tmp):
    return ml100k(tmp, "1\t1\t4\t881250949\t7\n"), "u.data, line 1"


@case("ml100k-id-overflows-int64")
def _(tmp):
    return ml100k(tmp, "99999999999999999999999\t1\t4\t881250949\n"), "u.data, line 1"


@case("ml100k-u.item-empty")
def _(tmp):
    return ml100k(tmp, item=""), "u.item"


@case("ml100k-u.item-utf16")
def _(tmp):
    return ml100k(tmp, item="1|A (1995)|||x|{}\n".format(GOOD_ITEM).encode("utf-16")), "u.item"


# ----------------------------------------------------------------------------- zip archives
@case("irbench-bad-crc")
def _(tmp):
    raw = bytearray(zip_bytes(IR_GOOD, zipfile.ZIP_STORED))
    at = raw.find(b"user_procid\titem_procid\n0\t0")
    raw[at + 25] ^= 0x01  # flip one stored byte of train.tsv; the CRC no longer matches
    return irbench(tmp, raw=bytes(raw)), "train.tsv"


@case("irbench-encrypted-member")
def _(tmp):
    return irbench(tmp, raw=patch_central(zip_bytes(IR_GOOD), "train.tsv", 8, b"\x01\x00")), "encrypted"


@case("irbench-unsupported-compression")
def _(tmp):
    return irbench(tmp, raw=patch_central(zip_bytes(IR_GOOD), "train.tsv", 10, b"\x63\x00")), "compression method"


@case("irbench-two-train-tsv")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "copy/train.tsv": "user_procid\titem_procid\n1\t1\n"}), "train.tsv twice"


@case("irbench-zip-bomb")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "train.tsv": "user_procid\titem_procid\n" + "0\t0\n" * 20_000_000}), "zip bomb"


@case("irbench-archive-is-a-folder")
def _(tmp):
    (tmp / "ir-benchmark" / "iid" / "movielens-100k" / "proc.zip").mkdir(parents=True)
    return ["data", "stats", "movielens-100k", "--data-dir", str(tmp)], "proc.zip"


@case("irbench-empty-archive")
def _(tmp):
    return irbench(tmp, {}), "proc.zip"


@case("irbench-bzip2-garbage")
def _(tmp):
    raw = bytearray(zip_bytes(IR_GOOD, zipfile.ZIP_BZIP2))
    at = raw.find(b"BZh")
    raw[at + 10:at + 30] = b"\x00" * 20
    return irbench(tmp, raw=bytes(raw)), "proc.zip"


@case("irbench-duplicate-procid")
def _(tmp):
    return irbench(tmp, {**IR_GOOD, "user_list.tsv": "user_orgid\tuser_procid\n10\t0\n11\t0\n"}), "user_list.tsv"


# ----------------------------------------------------------------------------- gzip and tables
@case("csv-gz-bomb")
def _(tmp):
    return table(tmp, "bomb.csv.gz", gzip.compress(b"user,item\n" + b"1,1\n" * 20_000_000, 1)), "bomb.csv.gz"


@case("csv-gz-not-gzip")
def _(tmp):
    return table(tmp, "t.csv.gz", "user,item\n1,2\n"), "t.csv.gz"


@case("csv-gz-empty")
def _(tmp):
    return table(tmp, "t.csv.gz", b""), "t.csv.gz"


@case("csv-gz-trailing-garbage")
def _(tmp):
    return table(tmp, "t.csv.gz", gzip.compress(b"user,item\n1,2\n") + b"garbage!"), "t.csv.gz"


@case("csv-is-a-folder")
def _(tmp):
    (tmp / "t.csv").mkdir()
    return ["data", "stats", str(tmp / "t.csv")], "t.csv"


@case("csv-header-only")
def _(tmp):
    return table(tmp, "t.csv", "user,item\n"), "t.csv"


@case("csv-one-column")
def _(tmp):
    return table(tmp, "t.csv", "user\n1\n2\n"), "t.csv"


@case("csv-duplicate-columns")
def _(tmp):
    return table(tmp, "t.csv", "user,user,item\n1,1,2\n"), "t.csv"


@case("csv-nul-bytes")
def _(tmp):
    return table(tmp, "t.csv", b"user,item\n1,\x002\n\x00\x00\x00\n"), "t.csv"


@case("csv-unterminated-quote")
def _(tmp):
    return table(tmp, "t.csv", 'user,item\n"1,2\n3,4\n'), "t.csv"


@case("csv-empty-user")
def _(tmp):
    return table(tmp, "t.csv", "user,item,rating\n,2,3\n"), "t.csv"


# ----------------------------------------------------------------------------- Parquet
def parquet(tmp: Path, cols: dict, name: str = "t.parquet") -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(cols), tmp / name)
    return ["data", "stats", str(tmp / name)]


@case("parquet-nan-user-id")
def _(tmp):
    return parquet(tmp, {"user": [1.0, float("nan")], "item": [1, 2]}), "row 2"


@case("parquet-inf-item-id")
def _(tmp):
    return parquet(tmp, {"user": [1, 2], "item": [1.0, float("inf")]}), "row 2"


@case("parquet-null-user")
def _(tmp):
    return parquet(tmp, {"user": [1, None], "item": [1, 2]}), "row 2"


@case("parquet-no-rows")
def _(tmp):
    import pyarrow as pa

    return parquet(tmp, {"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64())}), "t.parquet"


@case("parquet-no-user-column")
def _(tmp):
    return parquet(tmp, {"who": [1], "item": [1]}), "t.parquet"


@case("parquet-truncated")
def _(tmp):
    parquet(tmp, {"user": list(range(100)), "item": list(range(100))})
    raw = (tmp / "t.parquet").read_bytes()
    (tmp / "t.parquet").write_bytes(raw[: len(raw) // 2])
    return ["data", "stats", str(tmp / "t.parquet")], "t.parquet"


@case("parquet-nan-rating")
def _(tmp):
    return parquet(tmp, {"user": [1, 2], "item": [1, 2], "rating": [1.0, float("nan")]}), "row 2"


# ----------------------------------------------------------------------------- JSON
@case("sdpo-deeply-nested")
def _(tmp):
    return table(tmp, "p.json", "[" * 100_000 + "]" * 100_000), "p.json"


@case("jsonl-deeply-nested")
def _(tmp):
    return table(tmp, "p.jsonl", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n"), "p.jsonl"


@case("sdpo-top-level-string")
def _(tmp):
    return table(tmp, "p.json", '"hello"'), "p.json"


@case("sdpo-empty-array")
def _(tmp):
    return table(tmp, "p.json", "[]"), "p.json"


@case("sdpo-nan-literal")
def _(tmp):
    return table(tmp, "p.json", '[{"history": [NaN]}]'), "p.json"


@case("jsonl-garbage-line")
def _(tmp):
    return table(tmp, "p.jsonl", '{"a": 1}\nnot json\n'), "p.jsonl, line 2"


# ----------------------------------------------------------------------------- YAML
BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@case("yaml-alias-bomb-config")
def _(tmp):
    return cf(tmp, text=BOMB), "alias"


@case("yaml-alias-bomb-under-presets")
def _(tmp):
    body = "\n".join("    " + ln for ln in BOMB.splitlines())
    return study(tmp, STUDY.format(out=tmp / "runs") + "  presets:\n    bomb:\n" + body + "\n"), "alias"


@case("yaml-deeply-nested")
def _(tmp):
    return cf(tmp, text="a: " + "[" * 5000 + "]" * 5000 + "\n"), "nested"


@case("yaml-recursive-alias")
def _(tmp):
    return cf(tmp, text="a: &a [*a]\n"), "cf.yaml"


@case("yaml-config-is-a-folder")
def _(tmp):
    (tmp / "c.yaml").mkdir()
    return ["train-cf", "--config", str(tmp / "c.yaml")], "c.yaml"


@case("yaml-binary-tag")
def _(tmp):
    return cf(tmp, text="name: !!binary aGVsbG8=\n"), "name"


@case("yaml-list-key")
def _(tmp):
    return cf(tmp, text="? [a, b]\n: 1\n"), "cf.yaml"


@case("yaml-huge-file")
def _(tmp):
    return cf(tmp, text="# " + "x" * (17 << 20) + "\n"), "cf.yaml"


# ----------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("build", CASES)
def test_malformed_input(build, tmp_path, capsys, monkeypatch):
    from prefrec import safeio

    monkeypatch.setattr(safeio, "MAX_DECOMPRESSED", 64 << 20)  # bombs in the corpus stay small and fast
    monkeypatch.setenv("PREFREC_DATA", str(tmp_path / "no-data-here"))  # main() sets it; restored after
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
    assert len(CASES) >= 150


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(PrefrecError):
        main(["--debug", "run", str(tmp_path / "nope.yaml")])
