"""Download with checksum against a loopback HTTP server started in the test (no other network)."""

from __future__ import annotations

import functools
import hashlib
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prefrec.cli import main
from prefrec.data import download as D
from prefrec.errors import DataError

U_DATA = "1\t1\t5\t874965758\n2\t1\t3\t876893171\n"
U_ITEM = "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1 (random port); stopped at the end of the test."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    httpd.timeout = 5
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=5)


def make_zip(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, body in members.items():
            z.writestr(name, body)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_checksum_atomically(server, tmp_path):
    www, base = server
    digest = make_zip(www / "a.zip", {"ml-100k/u.data": U_DATA})
    dest = tmp_path / "out" / "a.zip"
    assert D.download(f"{base}/a.zip", dest, sha256=digest) == digest
    assert D.sha256_file(dest) == digest
    bad = tmp_path / "out" / "b.zip"
    with pytest.raises(DataError) as e:
        D.download(f"{base}/a.zip", bad, sha256="0" * 64)
    assert f"{base}/a.zip" in str(e.value) and "sha256 mismatch" in str(e.value) and "Fix:" in str(e.value)
    assert not bad.exists() and [p.name for p in bad.parent.iterdir()] == ["a.zip"]  # no temp file left


def test_download_http_error(server, tmp_path):
    _, base = server
    with pytest.raises(DataError, match="HTTP 404.*Fix: check the URL"):
        D.download(f"{base}/missing.zip", tmp_path / "x.zip", sha256="0" * 64)
    assert not (tmp_path / "x.zip").exists()


def test_extract_rejects_path_traversal(tmp_path):
    for name in ("../evil.txt", "/abs.txt", "ok/../../evil.txt"):
        z = tmp_path / "bad.zip"
        make_zip(z, {"fine.txt": "x", name: "pwned"})
        with pytest.raises(DataError, match="outside the target folder"):
            D.extract_zip(z, tmp_path / "dest")
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest").exists()


def test_fetch_places_folder_and_cli_download(server, tmp_path, capsys, monkeypatch):
    www, base = server
    monkeypatch.setenv("PREFREC_DATA", str(tmp_path / "data"))  # main() sets it; restored after the test
    digest = make_zip(www / "ml-100k.zip", {"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})
    data = tmp_path / "data"
    rc = main(["data", "download", "ml-100k", "--data-dir", str(data), "--url", f"{base}/ml-100k.zip",
               "--sha256", digest])
    assert rc == 0
    out = capsys.readouterr().out
    assert "(verified)" in out and digest in out
    assert (data / "ml-100k" / "u.data").read_text() == U_DATA
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # temp folder cleaned
    # already there -> error without --force; wrong checksum -> error, existing copy untouched
    assert main(["data", "download", "ml-100k", "--data-dir", str(data), "--url", f"{base}/ml-100k.zip",
                 "--sha256", digest]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "download", "ml-100k", "--data-dir", str(data), "--url", f"{base}/ml-100k.zip",
                 "--sha256", "f" * 64, "--force"]) == 2
    assert "sha256 mismatch" in capsys.readouterr().err
    assert (data / "ml-100k" / "u.data").read_text() == U_DATA
    assert main(["data", "stats", "ml-100k", "--data-dir", str(data)]) == 0
    assert "interactions" in capsys.readouterr().out


def test_fetch_dataset_without_url():
    with pytest.raises(DataError, match="no public download URL.*downloadable: ml-100k"):
        D.fetch_dataset("gowalla", data_dir="/nonexistent")


def test_registered_downloads_pin_content_digests(server, tmp_path, capsys, monkeypatch):
    """Every registered download pins sha256 digests; a mirror (--url) serving other bytes is refused
    unless the caller pins that archive with --sha256."""
    from prefrec.data.registry import DATASETS

    assert all(s.remote.sha256 or s.remote.files for s in DATASETS.values() if s.remote is not None)
    www, base = server
    monkeypatch.setenv("PREFREC_DATA", str(tmp_path / "data"))
    make_zip(www / "other.zip", {"ml-100k/u.data": U_DATA, "ml-100k/u.item": U_ITEM})
    data = tmp_path / "data"
    assert main(["data", "download", "ml-100k", "--data-dir", str(data), "--url", f"{base}/other.zip"]) == 2
    err = capsys.readouterr().err
    assert "differs from the pinned" in err and "u.data" in err and "Traceback" not in err
    assert not (data / "ml-100k").exists()


def test_extraction_is_limited(tmp_path, monkeypatch):
    """A zip bomb stops at the limit (counted while writing), with nothing left behind."""
    from prefrec import safeio

    monkeypatch.setattr(safeio, "MAX_DECOMPRESSED", 1 << 20)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros", b"\0" * (3 << 20))
    with pytest.raises(DataError, match="zip bomb"):
        D.extract_zip(bomb, tmp_path / "x")
