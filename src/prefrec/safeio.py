"""Reading untrusted files without being hurt by them: size, nesting and alias limits.

Why: a 6 MB zip can expand to 6 GiB, ten lines of YAML aliases to billions of values, a JSON
file nested 100,000 deep overflows Python's stack. Every reader goes through these helpers,
so each of those becomes a :class:`~prefrec.errors.DataError` / ``ConfigError`` naming the file
and the limit, never a hang, a ``MemoryError`` or a ``RecursionError``.

Limits (module attributes, read at call time; the environment variables override them):

* :data:`MAX_DECOMPRESSED` (``PREFREC_MAX_DECOMPRESSED_MB``, default 2048 MiB): bytes one gzip
  file or one zip member may expand to; also bytes a whole archive may extract to.
* :data:`MAX_FILE` (``PREFREC_MAX_FILE_MB``, default 4096 MiB): bytes of one file read whole.
* :data:`MAX_DEPTH` (100): nesting of YAML/JSON values (configs and data files are flat).
* :data:`MAX_YAML_NODES` (200,000): values a YAML document may expand to through aliases.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

from prefrec.errors import ConfigError, DataError, PrefrecError

MAX_DECOMPRESSED = int(os.environ.get("PREFREC_MAX_DECOMPRESSED_MB", "2048")) << 20
MAX_FILE = int(os.environ.get("PREFREC_MAX_FILE_MB", "4096")) << 20
MAX_DEPTH = 100
MAX_YAML_NODES = 200_000
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
               zipfile.ZIP_LZMA: "lzma"}


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def read_file(path: str | Path, what: str, fix: str) -> bytes:
    """Bytes of ``path`` (``.gz`` decompressed, within :data:`MAX_DECOMPRESSED`); a missing
    file, a folder, an unreadable or oversized file is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found", where=str(path), fix=fix)
    if path.is_dir():
        raise DataError(f"{what} is a folder, not a file", where=str(path), fix=fix)
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise DataError(f"{what} is {_mb(size)}, over the {_mb(MAX_FILE)} limit", where=str(path),
                            fix="check the file; raise PREFREC_MAX_FILE_MB if it is really this big")
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {what} ({e.strerror or e})", where=str(path),
                        fix="check the file's permissions, or that it is a regular file") from None
    if path.suffix == ".gz":
        raw = gunzip(raw, str(path))
    return raw


def gunzip(raw: bytes, loc: str) -> bytes:
    """Decompress gzip bytes, refusing more than :data:`MAX_DECOMPRESSED` (a gzip bomb)."""
    limit = MAX_DECOMPRESSED
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error):
        raise DataError("not a valid gzip file (truncated or corrupt)", where=loc,
                        fix="restore the file or fetch it again") from None
    if len(out) > limit:
        raise DataError(f"decompresses to more than {_mb(limit)} (a gzip bomb, or a very large file)", where=loc,
                        fix="check the file; raise PREFREC_MAX_DECOMPRESSED_MB if it is really this big")
    return out


def open_zip(path: str | Path, fix: str = "download the archive again and check its sha256") -> zipfile.ZipFile:
    """``ZipFile(path)`` with every way of not being a zip as a DataError."""
    path = Path(path)
    if path.is_dir():
        raise DataError("expected a zip archive, found a folder", where=str(path), fix=fix)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise DataError("not a zip archive (truncated or corrupt)", where=str(path), fix=fix) from None


def zip_members(zf: zipfile.ZipFile, loc: str) -> dict[str, zipfile.ZipInfo]:
    """File members by base name; two members with one base name (which one is meant?) are an error."""
    out: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.is_dir():
            continue
        base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
        if base in out:
            raise DataError(f"the archive holds {base} twice ({out[base].filename!r} and {info.filename!r})",
                            where=loc, fix="use an archive with one copy of each file")
        out[base] = info
    return out


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, loc: str, budget: list[int] | None = None) -> bytes:
    """One member's bytes: encrypted, unsupported-method, CRC-damaged or oversized members are
    DataErrors. ``budget`` (a one-item list) is the archive-wide byte allowance, decremented."""
    buf = io.BytesIO()
    copy_member(zf, info, buf, loc, budget)
    return buf.getvalue()


def copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: Any, loc: str, budget: list[int] | None = None,
                chunk: int = 1 << 20) -> int:
    """Stream one member into the file object ``dst`` with the checks of :func:`read_member`;
    the size is counted while decompressing (the header's size is not trusted). Returns bytes."""
    where_ = f"{loc}:{info.filename}"
    if info.flag_bits & 0x1:
        raise DataError("the archive member is encrypted", where=where_, fix="use an unencrypted archive")
    if info.compress_type not in ZIP_METHODS:
        raise DataError(f"the archive member uses compression method {info.compress_type}, which is not supported",
                        where=where_, fix=f"re-pack the archive with {', '.join(ZIP_METHODS.values())}")
    limit = MAX_DECOMPRESSED if budget is None else min(MAX_DECOMPRESSED, budget[0])
    total = 0
    try:
        with zf.open(info) as f:
            while block := f.read(min(chunk, limit + 1 - total)):
                total += len(block)
                if total > limit:
                    raise DataError(f"the archive member expands to more than {_mb(limit)} (a zip bomb, or a very "
                                    "large file)", where=where_,
                                    fix="check the archive; raise PREFREC_MAX_DECOMPRESSED_MB if it is really this big")
                dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError) as e:
        raise DataError(f"the archive member is damaged ({str(e)[:120] or type(e).__name__})", where=where_,
                        fix="download the archive again and check its sha256") from None
    if budget is not None:
        budget[0] -= total
    return total


def json_loads(text: str | bytes, loc: str, fix: str = "check the file") -> Any:
    """``json.loads`` with syntax errors (line named) and runaway nesting as DataErrors."""
    try:
        obj = json.loads(text)
    except RecursionError:
        raise DataError("JSON nested too deeply", where=loc, fix=f"{fix} (at most {MAX_DEPTH} levels)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", where=loc if ", line " in loc else f"{loc}, line {e.lineno}",
                        fix=fix) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"invalid JSON ({type(e).__name__})", where=loc, fix=fix) from None
    check_depth(obj, loc, DataError, fix)
    return obj


def check_depth(obj: Any, loc: str, error: type[PrefrecError] = DataError, fix: str = "flatten it") -> None:
    """Refuse values nested deeper than :data:`MAX_DEPTH` (iterative: deep input cannot overflow)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > MAX_DEPTH:
            raise error(f"values nested deeper than {MAX_DEPTH} levels", where=loc, fix=fix)
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)


def yaml_load(text: str, loc: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs (more than :data:`MAX_YAML_NODES` values after
    expansion) and nesting deeper than :data:`MAX_DEPTH`, before constructing anything."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError("YAML nested too deeply", where=loc, fix=f"use at most {MAX_DEPTH} levels") from None
        if node is None:
            return None
        _check_yaml_graph(node, loc)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_yaml_graph(root: Any, loc: str) -> None:
    """Expanded size (aliases counted every time they are used) and depth of a composed YAML graph."""
    import yaml

    sizes: dict[int, int] = {}
    # iterative post-order: (node, depth, children_done)
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    active: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"YAML nested deeper than {MAX_DEPTH} levels", where=loc, fix="flatten it")
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        kids = [x for kv in node.value for x in kv] if isinstance(node, yaml.MappingNode) else list(node.value)
        if not done:
            if id(node) in sizes:
                continue
            if id(node) in active:  # a recursive alias (a value containing itself)
                raise ConfigError("YAML value refers to itself through an alias", where=loc, fix="remove the alias")
            active.add(id(node))
            stack.append((node, depth, True))
            stack.extend((k, depth + 1, False) for k in kids if id(k) not in sizes)
            continue
        active.discard(id(node))
        total = 1 + sum(sizes.get(id(k), 1) for k in kids)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"YAML aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb)",
                              where=loc, fix="write the values out, or use fewer nested aliases")
        sizes[id(node)] = total


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_weights(folder: str | Path) -> None:
    """Weights under ``folder`` (and ``folder/base``) must be safetensors that open: pickled
    weights (``pytorch_model.bin``) are refused (loading a pickle runs code), a torn or foreign
    ``.safetensors`` is a DataError naming it, not a traceback from deep inside a loader."""
    from safetensors import safe_open

    folder = Path(folder)
    for d in (folder, folder / "base"):
        if not d.is_dir():
            continue
        files = sorted(d.iterdir())
        st = [p for p in files if p.suffix == ".safetensors"]
        pick = [p for p in files if p.suffix in PICKLE_SUFFIXES]
        if pick and not st:
            raise DataError(f"the weights are stored as a pickle ({pick[0].name}); prefrec never loads pickles "
                            "(unpickling can run arbitrary code)", where=str(pick[0]),
                            fix="re-save the model with save_pretrained(..., safe_serialization=True) in a trusted "
                                "environment, or train the run again")
        for p in st:
            try:
                with safe_open(str(p), framework="pt") as f:
                    f.keys()
            except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all mean unreadable
                raise DataError(f"the weights file cannot be read ({str(e)[:120] or type(e).__name__})",
                                where=str(p), fix="restore it, or train the run again") from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``path`` via a uniquely named temp file in the same folder (``mkstemp``: created with
    O_EXCL, so a planted symlink is never followed) + fsync + rename (readers see old or new)."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
