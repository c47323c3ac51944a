"""Download datasets that have a public URL, with a sha256 check and safe extraction.

Writes are atomic: the download goes to a temporary file beside the target and is renamed into
place only after its checksum matched; an archive is extracted into a temporary folder and
renamed into place only if every member name is safe (no absolute paths, no ``..``, no links).
So an interrupted or tampered download never leaves a half-written dataset behind.

Pinned checksums: every registered download pins the sha256 of the files it must hold
(``Remote.files``, e.g. MovieLens-100K's ``u.data`` and ``u.item``, computed from the shared copy
whose bytes match GroupLens'), checked after extraction; the archive's own digest is pinned where
known (``Remote.sha256``; not for MovieLens-100K: the zip itself was not available here to hash).
``--sha256 <hex>`` adds an archive digest check per call. Extraction is limited to
:data:`prefrec.safeio.MAX_DECOMPRESSED` bytes per archive (zip bombs), counted while writing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prefrec.errors import DataError
from prefrec.safeio import copy_member

CHUNK = 1 << 20
MAX_BYTES = 4 << 30


@dataclass(frozen=True)
class Remote:
    """Where a dataset can be fetched from: archive URL, optional sha256, and the folder the
    archive holds (it is placed at ``<data_dir>/<folder>``)."""

    url: str
    folder: str
    sha256: str | None = None
    files: tuple[tuple[str, str], ...] = ()
    """(path inside ``folder``, sha256) of files the archive must hold: pinned content digests,
    checked after extraction, for archives whose own digest is not recorded here."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _opener(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlparse(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):  # never route loopback through a proxy
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def download(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0,
             max_bytes: int = MAX_BYTES) -> str:
    """Fetch ``url`` to ``dest`` atomically; verify ``sha256`` when given. Returns the digest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise DataError(f"{sha256!r} is not a sha256 hex digest", where="sha256",
                            fix="give the 64 hex characters printed by `sha256sum`")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _opener(url).open(url, timeout=timeout) as resp:
                    total = 0
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        total += len(block)
                        if total > max_bytes:
                            raise DataError(f"download exceeds {max_bytes:,} bytes", where=url,
                                            fix="check the URL points at the dataset archive")
                        h.update(block)
                        out.write(block)
            except urllib.error.HTTPError as e:
                raise DataError(f"HTTP {e.code} {e.reason}", where=url,
                                fix="check the URL, or download the file by hand into the data folder") from None
            except (urllib.error.URLError, TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise DataError(f"cannot download ({reason})", where=url,
                                fix="check the network connection, or download the file by hand") from None
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256:
            raise DataError(f"sha256 mismatch: expected {sha256}, got {digest}", where=url,
                            fix="the file is corrupt or was changed upstream; retry, or pin the new digest "
                                "with --sha256 after checking it")
        os.replace(tmp, dest)
        return digest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _safe_member(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it would escape the target folder."""
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name.split("/")[0]:
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or any(part == ".." for part in p.parts):
        return None
    return p


def extract_zip(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract ``archive`` into ``dest`` (created), refusing unsafe member names and symlinks."""
    from prefrec import safeio

    archive, dest = Path(archive), Path(dest)
    zf = safeio.open_zip(archive, fix="download it again")
    budget = [safeio.MAX_DECOMPRESSED]  # the whole archive may extract to at most this many bytes
    out = []
    with zf:
        for info in zf.infolist():
            rel = _safe_member(info.filename)
            if rel is None:
                raise DataError(f"archive member {info.filename!r} would be written outside the target folder",
                                where=str(archive), fix="do not use this archive; fetch it from the official URL")
            if not info.is_dir() and rel.parts and dest.joinpath(*rel.parts).exists():
                raise DataError(f"archive member {info.filename!r} exists already", where=str(archive),
                                fix="extract into an empty folder")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DataError(f"archive member {info.filename!r} is a symbolic link", where=str(archive),
                                fix="do not use this archive; fetch it from the official URL")
        dest.mkdir(parents=True, exist_ok=True)
        for info in zf.infolist():
            target = dest.joinpath(*_safe_member(info.filename).parts)  # type: ignore[union-attr]
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as dst:  # "x": a member written twice, or a planted file, is refused
                copy_member(zf, info, dst, str(archive), budget)
            out.append(target)
    return out


def verify_files(folder: Path, files: tuple[tuple[str, str], ...], source: str) -> None:
    """Each pinned ``(relative path, sha256)`` must be present with that digest."""
    for rel, digest in files:
        p = folder / rel
        if not p.is_file():
            raise DataError(f"the archive lacks {rel}", where=source, fix="check the URL points at the official archive")
        got = sha256_file(p)
        if got != digest:
            raise DataError(f"{rel}: sha256 {got} differs from the pinned {digest}", where=source,
                            fix="the archive's content changed or is corrupt; fetch it from the official URL")


def fetch(remote: Remote, data_dir: str | Path, sha256: str | None = None, force: bool = False,
          timeout: float = 60.0) -> tuple[Path, str]:
    """Download ``remote`` and place its folder at ``<data_dir>/<remote.folder>``.

    The archive must hold ``<folder>/...`` (or its files at top level). Returns (folder, sha256).
    """
    data_dir = Path(data_dir)
    target = data_dir / remote.folder
    if target.exists() and not force:
        raise DataError(f"{target} already exists", where=str(target),
                        fix="pass --force to download again, or use the existing copy")
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{remote.folder}.", dir=data_dir))
    try:
        archive = work / "archive.zip"
        digest = download(remote.url, archive, sha256=sha256 or remote.sha256, timeout=timeout)
        extract_zip(archive, work / "x")
        archive.unlink()
        inner = work / "x" / remote.folder
        src = inner if inner.is_dir() else work / "x"
        verify_files(src, remote.files, remote.url)
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
        return target, digest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_dataset(name: str, data_dir: str | Path | None = None, sha256: str | None = None,
                  force: bool = False, url: str | None = None, timeout: float = 60.0) -> tuple[Path, str]:
    """Download a registered dataset that has a public URL (``url`` overrides it, e.g. a mirror)."""
    from dataclasses import replace

    from prefrec.data.datadir import data_dir as resolve_data_dir
    from prefrec.data.registry import DATASETS

    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}", where="dataset", fix="see `prefrec data list` for names")
    if spec.remote is None:
        with_url = sorted(n for n, s in DATASETS.items() if s.remote is not None)
        raise DataError(f"{name!r} has no public download URL", where="dataset",
                        fix=f"copy it into the data folder by hand; downloadable: {', '.join(with_url) or 'none'}")
    remote = spec.remote if url is None else replace(spec.remote, url=url)
    if url is not None and sha256 is not None:  # the caller pins their own archive (another release)
        remote = replace(remote, files=())
    return fetch(remote, resolve_data_dir(data_dir), sha256=sha256, force=force, timeout=timeout)
