"""Limits and safe writes of :mod:`prefrec.safeio`, each against a hand-built hostile input."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import zipfile

import pytest

from prefrec import safeio
from prefrec.errors import ConfigError, DataError


def test_atomic_write_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "eval"
    out.mkdir()
    for name in ("metrics.json.tmp", "predictions_rank.jsonl.tmp", ".metrics.json.tmp"):
        os.symlink(victim, out / name)  # the fixed names the old writer used
    from prefrec.lm.evaluate import _write_jsonl

    _write_jsonl(out / "predictions_rank.jsonl", [{"a": 1}])
    safeio.atomic_write_bytes(out / "metrics.json", b"{}")
    assert victim.read_text() == "precious"
    assert (out / "predictions_rank.jsonl").read_text() == '{"a": 1}\n'
    # a symlink AT the target is replaced (rename), not written through
    os.symlink(victim, out / "x.json")
    safeio.atomic_write_bytes(out / "x.json", b"new")
    assert victim.read_text() == "precious" and not (out / "x.json").is_symlink()
    assert not [p for p in out.iterdir() if p.name.startswith(".metrics.json.") and p.suffix == ".tmp"
                and not p.is_symlink()]


def test_gunzip_limit(monkeypatch):
    monkeypatch.setattr(safeio, "MAX_DECOMPRESSED", 1000)
    assert safeio.gunzip(gzip.compress(b"x" * 1000), "f") == b"x" * 1000
    with pytest.raises(DataError, match="gzip bomb"):
        safeio.gunzip(gzip.compress(b"x" * 1001), "f")


def test_zip_member_budget_counts_real_bytes(monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a", b"0" * 5000)
        zf.writestr("b", b"0" * 5000)
    zf = zipfile.ZipFile(buf)
    budget = [8000]
    assert len(safeio.read_member(zf, zf.getinfo("a"), "z", budget)) == 5000 and budget == [3000]
    with pytest.raises(DataError, match="zip bomb"):
        safeio.read_member(zf, zf.getinfo("b"), "z", budget)


def test_yaml_aliases_and_depth():
    assert safeio.yaml_load("a: &x [1, 2]\nb: *x\n", "c") == {"a": [1, 2], "b": [1, 2]}  # aliases are fine
    bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 7))
    with pytest.raises(ConfigError, match="alias bomb"):
        safeio.yaml_load(bomb, "c")
    with pytest.raises(ConfigError, match="nested"):
        safeio.yaml_load("a: " + "[" * 150 + "]" * 150, "c")
    with pytest.raises(ConfigError, match="refers to itself"):
        safeio.yaml_load("a: &a [*a]", "c")


def test_json_depth():
    assert safeio.json_loads("[[1]]", "f") == [[1]]
    with pytest.raises(DataError, match="nested"):
        safeio.json_loads("[" * 150 + "]" * 150, "f")
    with pytest.raises(DataError, match="nested"):
        safeio.json_loads("[" * 200_000 + "]" * 200_000, "f")
    with pytest.raises(DataError, match="f, line 2"):
        safeio.json_loads('{"a":\n x}', "f")


def test_check_weights_refuses_pickles_and_names_torn_files(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": [1.0]}))
    with pytest.raises(DataError, match="pickle"):
        safeio.check_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DataError, match="model.safetensors"):
        safeio.check_weights(tmp_path)
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    safeio.check_weights(tmp_path)  # a good file beside a stray pickle: the safetensors are used


def test_read_file_rules(tmp_path):
    with pytest.raises(DataError, match="not found"):
        safeio.read_file(tmp_path / "nope", "x", "fix")
    with pytest.raises(DataError, match="folder"):
        safeio.read_file(tmp_path, "x", "fix")
    (tmp_path / "a.json").write_text(json.dumps([1]))
    assert safeio.read_file(tmp_path / "a.json", "x", "fix") == b"[1]"
