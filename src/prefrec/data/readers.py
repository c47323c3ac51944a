"""Readers: each source format -> :class:`Dataset`, validating as it reads.

Every failure names the file, the line (1-based, as an editor shows it), what is wrong and
how to fix it. Readers never unpickle anything.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from prefrec.data.interactions import Dataset, Interactions, ItemCatalog, index_ids
from prefrec.errors import DataError, where


def _int_field(value: str, path: object, line: int, column: str, fix: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{column} {value!r} is not an integer", where=where(path, line, column),
                        fix=fix) from None


def _decode(raw: bytes, path: object, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"the bytes are not valid {encoding} text", where=where(path, line),
                        fix=f"re-save the file as {encoding}, or check you passed the right file") from None


# ----------------------------------------------------------------------------- MovieLens-100K
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def read_ml100k(folder: str | Path) -> Dataset:
    """MovieLens-100K raw files: ``u.data`` (tab: user, item, rating, timestamp) and ``u.item``
    (pipe-separated, latin-1, title in field 2, 19 genre flags at the end).

    Items are indexed by ``movie_id - 1`` (the LLaRA convention), users by ``user_id - 1``.
    """
    folder = Path(folder)
    data_path, item_path = folder / "u.data", folder / "u.item"
    for p in (data_path, item_path):
        if not p.exists():
            raise DataError(f"MovieLens-100K file {p.name} not found", where=str(p),
                            fix="point --data-dir at the folder holding ml-100k/ (u.data, u.item)")
    text = _decode(data_path.read_bytes(), data_path, "ascii")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataError(f"expected 4 tab-separated fields (user, item, rating, timestamp), found {len(parts)}",
                            where=where(data_path, n),
                            fix="u.data must be tab-separated; check the separator on that line")
        fix = "ids, ratings and timestamps in u.data are integers"
        rows.append([_int_field(v, data_path, n, c, fix)
                     for v, c in zip(parts, ("user", "item", "rating", "timestamp"))])
    if not rows:
        raise DataError("no interactions", where=str(data_path), fix="the file is empty; restore u.data")
    arr = np.asarray(rows, dtype=np.int64)
    titles, genres = _read_ml100k_items(item_path)
    n_items = len(titles)
    if (arr[:, 0] < 1).any() or (arr[:, 1] < 1).any():
        r = int(np.flatnonzero((arr[:, 0] < 1) | (arr[:, 1] < 1))[0])
        raise DataError("user and item ids must be >= 1", where=where(data_path, r + 1),
                        fix="MovieLens ids start at 1")
    bad = arr[:, 1] > n_items
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"item {arr[r, 1]} is not in u.item ({n_items} movies)", where=where(data_path, r + 1),
                        fix="use the u.item that belongs to this u.data")
    n_users = int(arr[:, 0].max())
    inter = Interactions(user=arr[:, 0] - 1, item=arr[:, 1] - 1, n_users=n_users, n_items=n_items,
                         timestamp=arr[:, 3], rating=arr[:, 2],
                         user_ids=np.arange(1, n_users + 1).astype(str),
                         item_ids=np.arange(1, n_items + 1).astype(str), source=str(data_path))
    catalog = ItemCatalog(titles=titles, meta={"genres": genres}, source=str(item_path))
    return Dataset(name="ml-100k", interactions=inter, catalog=catalog)


def _read_ml100k_items(path: Path) -> tuple[list[str], list[list[str]]]:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        # Valid UTF-8 with non-ASCII bytes means someone re-encoded the file; latin-1 would garble it.
        text = raw.decode("utf-8") if any(b > 127 for b in raw) else raw.decode("ascii")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    titles: list[str] = []
    genres: list[list[str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 24:
            raise DataError(f"expected 24 '|'-separated fields, found {len(parts)}", where=where(path, n),
                            fix="u.item is pipe-separated: id|title|date|video date|url|19 genre flags")
        mid = _int_field(parts[0], path, n, "movie_id", "the first field of u.item is the integer movie id")
        if mid != len(titles) + 1:
            raise DataError(f"movie ids must run 1, 2, 3, ... in order; found {mid} where {len(titles) + 1} was expected",
                            where=where(path, n), fix="remove duplicate or missing rows")
        titles.append(parts[1])
        genres.append([g for g, flag in zip(ML100K_GENRES, parts[5:]) if flag.strip() == "1"])
    if not titles:
        raise DataError("no movies", where=str(path), fix="the file is empty; restore u.item")
    return titles, genres


# ----------------------------------------------------------------------------- IR-Benchmark zip
IRBENCH_FILES = ("train.tsv", "test.tsv", "user_list.tsv", "item_list.tsv")


def read_irbench_zip(path: str | Path, name: str | None = None) -> Dataset:
    """IR-Benchmark ``proc.zip``: train/test TSV (user_procid, item_procid) + id maps, read from the zip.

    The predefined ``train`` and ``test`` splits are returned in ``Dataset.splits``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("IR-Benchmark archive not found", where=str(path),
                        fix="point --data-dir at the folder holding ir-benchmark/{iid,ood}/<name>/proc.zip")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError("not a zip archive (truncated or corrupt)", where=str(path),
                        fix="download the archive again and check its sha256") from None
    with zf:
        names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        for n in zf.namelist():
            if n.startswith("/") or ".." in Path(n).parts:
                raise DataError(f"archive member {n!r} has an unsafe path", where=str(path),
                                fix="use an archive whose members are plain file names")
        missing = [f for f in IRBENCH_FILES if f not in names]
        if missing:
            raise DataError(f"archive lacks {', '.join(missing)}", where=str(path),
                            fix="an IR-Benchmark proc.zip holds train.tsv, test.tsv, user_list.tsv, item_list.tsv")

        def table(fname: str) -> np.ndarray:
            loc = f"{path}:{fname}"
            text = _decode(zf.read(names[fname]), loc, "utf-8")
            lines = text.splitlines()
            if not lines:
                raise DataError("empty file", where=loc, fix="the archive is damaged; fetch it again")
            out = []
            for n, line in enumerate(lines[1:], 2):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) != 2:
                    raise DataError(f"expected 2 tab-separated columns, found {len(parts)}", where=where(loc, n),
                                    fix="IR-Benchmark TSVs are tab-separated with a header line")
                out.append(parts)
            return np.asarray(out, dtype=object).reshape(-1, 2)

        def ids(fname: str) -> np.ndarray:
            loc = f"{path}:{fname}"
            t = table(fname)
            try:
                return t[:, 1].astype(np.int64)
            except ValueError:
                raise DataError("processed ids must be integers", where=loc, fix="the archive is damaged") from None

        users, items = table("user_list.tsv"), table("item_list.tsv")
        n_users, n_items = len(users), len(items)
        splits = {}
        for split in ("train", "test"):
            fname = f"{split}.tsv"
            loc = f"{path}:{fname}"
            t = table(fname)
            try:
                arr = t.astype(np.int64)
            except ValueError:
                bad = next(i for i, row in enumerate(t) if not all(str(v).lstrip("-").isdigit() for v in row))
                raise DataError(f"non-numeric id {list(t[bad])}", where=where(loc, bad + 2),
                                fix="user and item columns must be integer processed ids") from None
            for col, n_max, what in ((0, n_users, "user"), (1, n_items, "item")):
                bad = (arr[:, col] < 0) | (arr[:, col] >= n_max)
                if bad.any():
                    r = int(np.flatnonzero(bad)[0])
                    raise DataError(f"{what} id {arr[r, col]} is outside 0..{n_max - 1} (from {what}_list.tsv)",
                                    where=where(loc, r + 2), fix=f"every {what} must appear in {what}_list.tsv")
            splits[split] = Interactions(user=arr[:, 0], item=arr[:, 1], n_users=n_users, n_items=n_items,
                                         user_ids=users[:, 0].astype(str), item_ids=items[:, 0].astype(str),
                                         source=loc)
        if len(splits["test"]) == 0:
            raise DataError("the test split is empty", where=f"{path}:test.tsv",
                            fix="a CF evaluation needs test interactions")
    train, test = splits["train"], splits["test"]
    both = Interactions(user=np.concatenate([train.user, test.user]), item=np.concatenate([train.item, test.item]),
                        n_users=n_users, n_items=n_items, user_ids=train.user_ids, item_ids=train.item_ids,
                        source=str(path))
    return Dataset(name=name or path.parent.name, interactions=both, splits=splits)
