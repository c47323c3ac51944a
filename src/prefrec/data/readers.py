"""Readers: each source format -> :class:`Dataset`, validating as it reads.

Every failure names the file, the line (1-based, as an editor shows it), what is wrong and
how to fix it. Readers never unpickle anything.

Delimited files are parsed with pyarrow (fast path); only when something is wrong do we walk
the text line by line, so the error can name the exact line without slowing good files down.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from prefrec.data.interactions import Dataset, Interactions, ItemCatalog, index_ids
from prefrec.errors import DataError, where

SEPARATORS = ("\t", ",", ";", "|", "::", " ")
_SEP_NAMES = {"\t": "tab", ",": "','", ";": "';'", "|": "'|'", "::": "'::'", " ": "space"}


def _short(v: object, n: int = 60) -> str:
    """``repr`` of a value for a message, cut to ``n`` characters (a 5 MB field gives a short error)."""
    r = repr(v)
    return r if len(r) <= n else f"{r[:n]}... ({len(r):,} characters)"


def _int_field(value: str, path: object, line: int, column: str, fix: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{column} {_short(value)} is not an integer", where=where(path, line, column),
                        fix=fix) from None


def _decode(raw: bytes, path: object, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"the bytes are not valid {encoding} text", where=where(path, line),
                        fix=f"re-save the file as {encoding}, or check you passed the right file") from None


def _read_bytes(path: Path, what: str, fix: str) -> bytes:
    """Whole file (``.gz`` decompressed) within the limits of :mod:`prefrec.safeio`."""
    from prefrec.safeio import read_file

    return read_file(path, what, fix)


# ----------------------------------------------------------------------------- delimited tables
@dataclass
class _Table:
    """A parsed delimited file: column name -> string array, plus what is needed to name lines."""

    loc: str
    text: str
    sep: str
    columns: list[str]
    arrow: dict[str, Any]  # column name -> pyarrow string array
    quoting: bool
    has_header: bool = True
    _np: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(next(iter(self.arrow.values()))) if self.arrow else 0

    @property
    def data(self) -> dict[str, np.ndarray]:
        """Columns as numpy string/object arrays (converted on first use)."""
        for c, a in self.arrow.items():
            if c not in self._np:
                self._np[c] = a.to_numpy(zero_copy_only=False)
        return self._np

    def line_of(self, row: int) -> int:
        """1-based file line of data row ``row`` (after the header, if any; empty lines are skipped)."""
        k = -1
        skip = 1 if self.has_header else 0
        for n, line in enumerate(self.text.split("\n")[skip:], skip + 1):
            if line.strip("\r"):
                k += 1
                if k == row:
                    return n
        return 0

    def ints(self, col: str, fix: str) -> np.ndarray:
        """Column as int64; the first non-integer value is reported with its line."""
        return self._convert(col, np.int64, "an integer", fix)

    def floats(self, col: str, fix: str, allow_nan: bool = False) -> np.ndarray:
        out = self._convert(col, np.float64, "a number", fix)
        bad = ~np.isfinite(out)
        if bad.any() and not allow_nan:
            r = int(np.flatnonzero(bad)[0])
            raise DataError(f"{col} is {self.data[col][r]!r} (NaN or infinite)",
                            where=where(self.loc, self.line_of(r), col),
                            fix=f"give every row a finite {col}, or drop the rows without one")
        return out

    def _convert(self, col: str, dtype: type, what: str, fix: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        try:
            arr = pc.cast(self.arrow[col], pa.int64() if dtype is np.int64 else pa.float64())
            return arr.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # find the offending row for a precise message
            pass
        vals = self.data[col]
        py = int if dtype is np.int64 else float
        out = np.empty(len(vals), dtype=dtype)
        for r, v in enumerate(vals):
            try:
                out[r] = py(v)
            except (TypeError, ValueError, OverflowError):
                big = isinstance(v, str) and v.strip().lstrip("+-").isdigit()
                raise DataError(f"{col} {_short(v)} is not {what}" + (" (too large for a 64-bit integer)" if big else ""), where=where(self.loc, self.line_of(r), col),
                                fix=fix) from None
        return out


def _split_header(line: str, sep: str, quoting: bool) -> list[str]:
    if quoting and len(sep) == 1:
        return [c.strip() for c in next(csv.reader([line], delimiter=sep))]
    return [c.strip() for c in line.split(sep)]


def sniff_separator(header: str, sample: str = "") -> str:
    """Guess the field separator from the header (and a few data lines): the candidate that splits
    the header into the most fields and gives every sample line the same field count."""
    best, best_n = None, 1
    lines = [ln for ln in sample.splitlines()[1:20] if ln.strip()]
    for sep in SEPARATORS:
        n = len(header.split(sep))
        if n <= best_n:
            continue
        if sep == " " and any(s in header for s in SEPARATORS[:-1]):
            continue  # spaces inside names, not a separator
        if lines and sep != "," and any(len(ln.split(sep)) != n for ln in lines):
            continue
        best, best_n = sep, n
    return best or ","


def _parse_table(raw: bytes, loc: str, *, sep: str | None, required: Sequence[str] = (),
                 encoding: str = "utf-8", quoting: bool = False, fix: str,
                 header: Sequence[str] | None = None) -> _Table:
    """Parse a delimited text file with a header line into string columns.

    ``required`` columns must be present (else: missing-column / wrong-separator errors that name
    line 1); ``header`` gives names for a file without a header line.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = _decode(raw, loc, encoding)
    first_nl = text.find("\n")
    first = (text if first_nl < 0 else text[:first_nl]).rstrip("\r")
    if not text.strip():
        raise DataError("the file is empty", where=loc, fix=fix)
    if header is None:
        if sep is None:
            sep = sniff_separator(first, text[:20000])
        columns = _split_header(first, sep, quoting)
    else:
        sep = sep or "\t"
        columns = list(header)
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        raise DataError(f"the header names column {dup[0]!r} twice", where=where(loc, 1),
                        fix="give every column a distinct name")
    missing = [c for c in required if c not in columns]
    others = [s for s in SEPARATORS if s != sep and s != " " and s in first]
    if missing or (len(columns) == 1 and others and header is None):
        if len(columns) == 1 and others:
            raise DataError(f"the header has one column {first[:60]!r}: the separator is not "
                            f"{_SEP_NAMES.get(sep, repr(sep))}", where=where(loc, 1),
                            fix=f"pass sep={others[0]!r} (or leave sep unset to sniff it)")
        raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; the header has "
                        f"{', '.join(map(repr, columns))}", where=where(loc, 1), fix=fix)
    import pyarrow as pa
    import pyarrow.csv as pcsv

    body = raw if encoding.lower().replace("-", "") in ("utf8", "ascii") else text.encode("utf-8")
    if len(sep) != 1:  # pyarrow takes one-character delimiters only
        body = text.replace(sep, "\x1f").encode("utf-8")
    names = [f"c{i}" for i in range(len(columns))]
    try:
        t = pcsv.read_csv(
            io.BytesIO(body),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=0 if header is not None else 1,
                                          block_size=1 << 24),
            parse_options=pcsv.ParseOptions(delimiter=sep if len(sep) == 1 else "\x1f",
                                            quote_char='"' if quoting else False),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        _raise_field_count(text, loc, sep, len(columns), quoting, header is None, fix, e)
        raise  # pragma: no cover - _raise_field_count always raises
    data = {c: t.column(n).combine_chunks() for c, n in zip(columns, names)}
    tab = _Table(loc=loc, text=text, sep=sep, columns=columns, arrow=data, quoting=quoting,
                 has_header=header is None)
    if len(tab) == 0:
        raise DataError("the file has a header but no data rows", where=loc, fix=fix)
    return tab


def _raise_field_count(text: str, loc: str, sep: str, n: int, quoting: bool, has_header: bool,
                       fix: str, err: Exception) -> None:
    lines = text.split("\n")
    start = 1 if has_header else 0
    for k, line in enumerate(lines[start:], start + 1):
        line = line.rstrip("\r")
        if not line:
            continue
        fields = _split_header(line, sep, quoting)
        if len(fields) != n:
            other = [s for s in SEPARATORS[:-1] if s != sep and len(line.split(s)) == n]
            hint = f" (the line looks {_SEP_NAMES[other[0]]}-separated)" if other else ""
            raise DataError(f"expected {n} {_SEP_NAMES.get(sep, repr(sep))}-separated fields, found {len(fields)}{hint}",
                            where=where(loc, k), fix=fix)
    raise DataError(f"cannot parse the file ({err})", where=loc, fix=fix)


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
    cols = ("user", "item", "rating", "timestamp")
    t = _parse_table(_read_bytes(data_path, "u.data", "restore u.data"), str(data_path), sep="\t", encoding="ascii", header=cols,
                     fix="u.data must be tab-separated: user, item, rating, timestamp; restore u.data")
    fix = "ids, ratings and timestamps in u.data are integers"
    arr = np.stack([t.ints(c, fix) for c in cols], axis=1)
    titles, genres = _read_ml100k_items(item_path)
    n_items = len(titles)
    if (arr[:, 0] < 1).any() or (arr[:, 1] < 1).any():
        r = int(np.flatnonzero((arr[:, 0] < 1) | (arr[:, 1] < 1))[0])
        raise DataError("user and item ids must be >= 1", where=where(data_path, t.line_of(r)),
                        fix="MovieLens ids start at 1")
    bad = arr[:, 1] > n_items
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"item {arr[r, 1]} is not in u.item ({n_items} movies)", where=where(data_path, t.line_of(r)),
                        fix="use the u.item that belongs to this u.data")
    n_users = int(arr[:, 0].max())
    _check_dense_ids(arr[:, 0], data_path, t, "user")
    inter = Interactions(user=arr[:, 0] - 1, item=arr[:, 1] - 1, n_users=n_users, n_items=n_items,
                         timestamp=arr[:, 3], rating=arr[:, 2],
                         user_ids=np.arange(1, n_users + 1).astype(str),
                         item_ids=np.arange(1, n_items + 1).astype(str), source=str(data_path))
    catalog = ItemCatalog(titles=titles, meta={"genres": genres}, source=str(item_path))
    return Dataset(name="ml-100k", interactions=inter, catalog=catalog)


SPARSE_IDS_ENV = "PREFREC_ALLOW_SPARSE_IDS"
"""Set to 1 to accept raw integer ids far above the number of distinct ids (see _check_dense_ids)."""


def _check_dense_ids(ids: np.ndarray, path: Path, t: "_Table", what: str) -> None:
    """Readers that index by raw integer id (``id - 1``) create one row per id up to the largest:
    one stray id of 3,000,000 would add millions of phantom users (every metric 0, training
    12x slower). Rule: the largest id may be at most 2 x (distinct ids) + 1000, else an error
    naming the line, unless ``PREFREC_ALLOW_SPARSE_IDS=1``."""
    import os

    top = int(ids.max())
    distinct = len(np.unique(ids))
    if top <= 2 * distinct + 1000 or os.environ.get(SPARSE_IDS_ENV) == "1":
        return
    r = int(np.argmax(ids))
    raise DataError(f"{what} id {top} is far outside the other ids ({distinct} distinct {what}s): it would "
                    f"create {top - distinct:,} {what}s without interactions", where=where(path, t.line_of(r)),
                    fix=f"check that line; set {SPARSE_IDS_ENV}=1 if such sparse ids are intended")


def _read_ml100k_items(path: Path) -> tuple[list[str], list[list[str]]]:
    raw = _read_bytes(path, "u.item", "restore u.item")
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
_IRB_FIX = "IR-Benchmark TSVs are tab-separated with a header line; the archive may be damaged, fetch it again"


def read_irbench_zip(path: str | Path, name: str | None = None) -> Dataset:
    """IR-Benchmark ``proc.zip``: train/test TSV (user_procid, item_procid) + id maps, read from the zip.

    The predefined ``train`` and ``test`` splits are returned in ``Dataset.splits``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("IR-Benchmark archive not found", where=str(path),
                        fix="point --data-dir at the folder holding ir-benchmark/{iid,ood}/<name>/proc.zip")
    from prefrec.safeio import open_zip, read_member, zip_members

    zf = open_zip(path)
    with zf:
        names = zip_members(zf, str(path))
        for n in zf.namelist():
            if n.startswith("/") or ".." in Path(n).parts:
                raise DataError(f"archive member {n!r} has an unsafe path", where=str(path),
                                fix="use an archive whose members are plain file names")
        missing = [f for f in IRBENCH_FILES if f not in names]
        if missing:
            raise DataError(f"archive lacks {', '.join(missing)}", where=str(path),
                            fix="an IR-Benchmark proc.zip holds train.tsv, test.tsv, user_list.tsv, item_list.tsv")

        def table(fname: str) -> _Table:
            t = _parse_table(read_member(zf, names[fname], str(path)), f"{path}:{fname}", sep="\t", fix=_IRB_FIX)
            if len(t.columns) != 2:
                raise DataError(f"expected 2 tab-separated columns, found {len(t.columns)}",
                                where=where(t.loc, 1), fix=_IRB_FIX)
            return t

        user_ids = _irbench_id_map(table("user_list.tsv"), "user")
        item_ids = _irbench_id_map(table("item_list.tsv"), "item")
        n_users, n_items = len(user_ids), len(item_ids)
        splits = {}
        for split in ("train", "test"):
            t = table(f"{split}.tsv")
            fix = "user and item columns must be integer processed ids"
            cols = [t.ints(c, fix) for c in t.columns]
            for col, n_max, what in ((cols[0], n_users, "user"), (cols[1], n_items, "item")):
                bad = (col < 0) | (col >= n_max)
                if bad.any():
                    r = int(np.flatnonzero(bad)[0])
                    raise DataError(f"{what} id {col[r]} is outside 0..{n_max - 1} (from {what}_list.tsv)",
                                    where=where(t.loc, t.line_of(r)), fix=f"every {what} must appear in {what}_list.tsv")
            splits[split] = Interactions(user=cols[0], item=cols[1], n_users=n_users, n_items=n_items,
                                         user_ids=user_ids, item_ids=item_ids, source=t.loc)
        if len(splits["test"]) == 0:
            raise DataError("the test split is empty", where=f"{path}:test.tsv",
                            fix="a CF evaluation needs test interactions")
    train, test = splits["train"], splits["test"]
    both = Interactions(user=np.concatenate([train.user, test.user]), item=np.concatenate([train.item, test.item]),
                        n_users=n_users, n_items=n_items, user_ids=user_ids, item_ids=item_ids, source=str(path))
    return Dataset(name=name or path.parent.name, interactions=both, splits=splits)


def _irbench_id_map(t: _Table, what: str) -> np.ndarray:
    """``orgid -> procid`` table as an array ``ids[procid] = orgid``; procids must be 0..n-1 once each."""
    proc = t.ints(t.columns[1], "processed ids are integers")
    org = t.data[t.columns[0]].astype(str)
    n = len(proc)
    counts = np.bincount(np.clip(proc, 0, n), minlength=n + 1)
    if (proc < 0).any() or (proc >= n).any() or (counts[:n] != 1).any():
        dup = np.flatnonzero(counts[:n] > 1)
        if dup.size:
            rows = np.flatnonzero(proc == dup[0])
            raise DataError(f"duplicate {what} procid {dup[0]} (rows at lines {t.line_of(rows[0])} and "
                            f"{t.line_of(rows[1])})", where=where(t.loc, t.line_of(rows[1])),
                            fix=f"each {what} procid must appear once; the archive is damaged")
        raise DataError(f"{what} procids must be exactly 0..{n - 1}", where=t.loc,
                        fix="the archive is damaged; fetch it again")
    ids = np.empty(n, dtype=org.dtype)
    ids[proc] = org
    return ids


# ----------------------------------------------------------------------------- HetRec 2011 Last.fm
HETREC_FIX = ("HetRec Last.fm files are tab-separated with a header line: "
              "user_taggedartists.dat = userID, artistID, tagID, day, month, year; artists.dat = id, name, url, pictureURL")


def read_lastfm_hetrec(folder: str | Path, *, source: str = "tagged", plays: bool = True,
                       unknown_artists: str = "drop") -> Dataset:
    """HetRec 2011 Last.fm 2K.

    ``source="tagged"`` (default): dated interactions from ``user_taggedartists.dat``; the date
    (day/month/year, UTC midnight) of a user's *first* tag on an artist is the interaction time,
    one row per (user, artist). With ``plays=True`` the rating is that pair's play count from
    ``user_artists.dat`` (0 where the user has no play row: it lists each user's top-50 only).
    ``source="plays"``: ``user_artists.dat`` rows (no time), rating = play count.

    ``unknown_artists``: what to do with tagged artists missing from ``artists.dat`` (1,538
    assignments in the original): ``"drop"``, ``"keep"`` (titled ``artist <id>``) or ``"error"``.
    Users and items are indexed by sorted source id over the kept rows; titles come from
    ``artists.dat`` (UTF-8).
    """
    folder = Path(folder)
    if source not in ("tagged", "plays"):
        raise DataError(f"unknown source {source!r}", where="read_lastfm_hetrec", fix="use 'tagged' or 'plays'")
    if unknown_artists not in ("drop", "keep", "error"):
        raise DataError(f"unknown unknown_artists {unknown_artists!r}", where="read_lastfm_hetrec",
                        fix="use 'drop', 'keep' or 'error'")
    names = _read_hetrec_artists(folder / "artists.dat")
    plays_t = _hetrec_table(folder / "user_artists.dat", ["userID", "artistID", "weight"])
    fix_int = "ids and counts in HetRec files are integers"
    pu, pa_, pw = (plays_t.ints(c, fix_int) for c in ("userID", "artistID", "weight"))
    if source == "plays":
        users, artists, ts, rating, loc, t = pu, pa_, None, pw.astype(np.float64), plays_t.loc, plays_t
    else:
        t = _hetrec_table(folder / "user_taggedartists.dat", ["userID", "artistID", "tagID", "day", "month", "year"])
        users, artists = t.ints("userID", fix_int), t.ints("artistID", fix_int)
        ts = _hetrec_dates(t)
        order = np.lexsort((np.arange(len(ts)), ts, artists, users))
        key_u, key_a = users[order], artists[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (key_u[1:] != key_u[:-1]) | (key_a[1:] != key_a[:-1])
        keep = np.sort(order[first])  # earliest date per pair, in file order
        users, artists, ts = users[keep], artists[keep], ts[keep]
        rating = None
        if plays:
            rating = _lookup_pairs(pu, pa_, pw, users, artists).astype(np.float64)
        loc, t = t.loc, None
    known = np.isin(artists, np.fromiter(names.keys(), dtype=np.int64, count=len(names)))
    if not known.all():
        if unknown_artists == "error":
            r = int(np.flatnonzero(known == 0)[0])
            raise DataError(f"artist {artists[r]} is not in artists.dat", where=loc,
                            fix="pass unknown_artists='drop' or 'keep'")
        if unknown_artists == "drop":
            users, artists = users[known], artists[known]
            ts = None if ts is None else ts[known]
            rating = None if rating is None else rating[known]
    if len(users) == 0:
        raise DataError("no interactions left", where=loc, fix="check the files are the HetRec Last.fm files")
    u_idx, u_ids = index_ids(users)
    i_idx, i_ids = index_ids(artists)
    titles = [names.get(int(a), f"artist {a}") for a in i_ids]
    inter = Interactions(user=u_idx, item=i_idx, n_users=len(u_ids), n_items=len(i_ids), timestamp=ts,
                         rating=rating, user_ids=u_ids.astype(str), item_ids=i_ids.astype(str), source=loc)
    return Dataset(name="lastfm-hetrec" if source == "tagged" else "lastfm-hetrec-plays", interactions=inter,
                   catalog=ItemCatalog(titles=titles, source=str(folder / "artists.dat")))


def _hetrec_table(path: Path, required: list[str]) -> _Table:
    raw = _read_bytes(path, f"HetRec Last.fm file {path.name}",
                      "point --data-dir at the folder holding lastfm-hetrec2011/")
    return _parse_table(raw, str(path), sep="\t", required=required, fix=HETREC_FIX)


def _read_hetrec_artists(path: Path) -> dict[int, str]:
    t = _hetrec_table(path, ["id", "name"])
    ids = t.ints("id", "the first column of artists.dat is the integer artist id")
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows = np.flatnonzero(ids == dup)
        raise DataError(f"duplicate artist id {dup} (also on line {t.line_of(rows[0])})",
                        where=where(path, t.line_of(rows[1]), "id"),
                        fix="each id must appear once in a catalog; remove the duplicate row")
    return {int(i): str(n) for i, n in zip(ids, t.data["name"])}


def _hetrec_dates(t: _Table) -> np.ndarray:
    """day/month/year columns -> UTC-midnight unix seconds; impossible dates name their line."""
    fix = "day, month and year must form a real date (day 1-31, month 1-12, year 1900-2100)"
    d, m, y = (t.ints(c, fix) for c in ("day", "month", "year"))
    bad = (m < 1) | (m > 12) | (d < 1) | (d > 31) | (y < 1900) | (y > 2100)
    months = ((np.clip(y, 1900, 2100) - 1970) * 12 + np.clip(m, 1, 12) - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (np.clip(d, 1, 31) - 1).astype("timedelta64[D]")
    bad |= days.astype("datetime64[M]") != months  # e.g. 31/4
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{d[r]}/{m[r]}/{y[r]} (day/month/year) is not a date", where=where(t.loc, t.line_of(r)),
                        fix=fix)
    return days.astype("datetime64[s]").astype(np.int64).astype(np.float64)


def _lookup_pairs(ku: np.ndarray, ki: np.ndarray, kv: np.ndarray, qu: np.ndarray, qi: np.ndarray) -> np.ndarray:
    """Value of (qu, qi) in the table (ku, ki) -> kv, 0 where absent."""
    span = int(max(ki.max(initial=0), qi.max(initial=0))) + 1
    keys = ku * span + ki
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    q = qu * span + qi
    out = np.zeros(len(q), dtype=kv.dtype)
    if len(sk) == 0:
        return out
    pos = np.minimum(np.searchsorted(sk, q), len(sk) - 1)
    hit = sk[pos] == q
    out[hit] = kv[order][pos[hit]]
    return out


# ----------------------------------------------------------------------------- LLaRA sequence tables
class SeqRow(NamedTuple):
    """One given sequence row: a history (oldest first) and the next item, as catalog indices.

    ``user`` is inferred (a row that does not continue the previous row's window starts a new
    user), ``line`` is the row's line in its file so later errors can point back at it.
    (A NamedTuple, not a dataclass: 50k rows are built per file and this is 5x faster.)
    """

    user: int
    history: tuple[int, ...]
    next: int
    history_ratings: tuple[float, ...] | None = None
    next_rating: float | None = None
    line: int = 0


@dataclass
class SequenceDataset(Dataset):
    """A dataset that ships fixed sequence rows (LLaRA-style) per split, besides the usual table."""

    rows: dict[str, list[SeqRow]] = field(default_factory=dict)


LLARA_FIX = "each line is {\"history\": [ids], \"next\": id, ...} as written by the derived-jsonl converter"


def read_id2name(path: str | Path) -> ItemCatalog:
    """``id::name`` lines (UTF-8), ids 0..n-1 each exactly once -> catalog indexed by id."""
    path = Path(path)
    text = _decode(_read_bytes(path, "item name file", "point --data-dir at the folder holding it"), path, "utf-8")
    names: dict[int, str] = {}
    for n, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if "::" not in line:
            raise DataError("expected 'id::name'", where=where(path, n),
                            fix="each line is an integer id, '::' and the item name")
        sid, name = line.split("::", 1)
        i = _int_field(sid.strip(), path, n, "id", "each line starts with an integer item id")
        if i in names:
            raise DataError(f"duplicate item id {i}", where=where(path, n),
                            fix="each id must appear once in a catalog; remove the duplicate line")
        names[i] = name.strip()
    if not names:
        raise DataError("no items", where=str(path), fix="the file is empty; restore it")
    missing = sorted(set(range(len(names))) - names.keys())
    if missing:
        raise DataError(f"ids must be 0..{len(names) - 1} without gaps; {missing[0]} is missing", where=str(path),
                        fix="add the missing ids (titles index the catalog by id)")
    return ItemCatalog(titles=[names[i] for i in range(len(names))], source=str(path))


def _jsonl_rows(path: Path) -> list[tuple[int, Any]]:
    raw = _read_bytes(path, f"sequence file {path.name}", "point --data-dir at the folder holding it")
    text = _decode(raw, path, "utf-8")
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not numbered:
        raise DataError("no rows", where=str(path), fix="the file is empty; restore it")
    from prefrec.safeio import check_depth, json_loads

    try:  # one C-level parse for the whole file; per-line only to locate an error
        objs = json.loads("[" + ",".join(line for _, line in numbered) + "]")
        if len(objs) == len(numbered):
            check_depth(objs, str(path), DataError, "one flat JSON object per line")
            return [(n, o) for (n, _), o in zip(numbered, objs)]
    except (json.JSONDecodeError, RecursionError):
        pass
    return [(n, json_loads(line, where(path, n), "one JSON object per line")) for n, line in numbered]


def _llara_item(v: Any, path: Path, n: int, col: str, n_items: int) -> tuple[int, float | None]:
    """An id (``3``) or an ``[id, rating]`` pair, checked against the catalog size."""
    rating = None
    if isinstance(v, list) and len(v) == 2:
        v, rating = v
        if not isinstance(rating, (int, float)) or not np.isfinite(rating):
            raise DataError(f"{col} rating {rating!r} is not a finite number", where=where(path, n, col), fix=LLARA_FIX)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(f"{col} item {_short(v)} is not an integer id", where=where(path, n, col), fix=LLARA_FIX)
    if not 0 <= v < n_items:
        raise DataError(f"{col} item {v} is not in the catalog (ids 0..{n_items - 1})", where=where(path, n, col),
                        fix="use the id2name/u.item catalog that belongs to these sequences")
    return v, None if rating is None else float(rating)


def read_llara_rows(path: str | Path, n_items: int, max_history: int = 10) -> list[SeqRow]:
    """LLaRA rows from a ``.jsonl(.gz)`` with ``history`` and ``next`` (ids, or [id, rating] pairs)."""
    path = Path(path)
    rows: list[SeqRow] = []
    user = -1
    prev: SeqRow | None = None
    for n, obj in _jsonl_rows(path):
        if not isinstance(obj, dict) or "history" not in obj or "next" not in obj:
            raise DataError("row lacks 'history' or 'next'", where=where(path, n), fix=LLARA_FIX)
        if not isinstance(obj["history"], list):
            raise DataError("'history' is not a list", where=where(path, n, "history"), fix=LLARA_FIX)
        h, nx = obj["history"], obj["next"]
        if (type(nx) is int and 0 <= nx < n_items and all(type(v) is int for v in h)
                and (not h or (min(h) >= 0 and max(h) < n_items))):  # fast path: plain valid ids
            h_ids, h_rat, nxt, nrat = tuple(h), None, nx, None
        else:
            hist = [_llara_item(v, path, n, "history", n_items) for v in h]
            nxt, nrat = _llara_item(nx, path, n, "next", n_items)
            h_ids = tuple(i for i, _ in hist)
            h_rat = tuple(r for _, r in hist) if hist and hist[0][1] is not None else None
        if prev is None or h_ids != (prev.history + (prev.next,))[-max_history:]:
            user += 1
        prev = SeqRow(user, h_ids, nxt, h_rat, nrat, n)
        rows.append(prev)
    return rows


def _rows_to_interactions(rows_by_split: dict[str, list[SeqRow]], n_items: int,
                          source: str) -> tuple[Interactions, dict[str, Interactions]]:
    """Rebuild each user's sequence (first row's history, then every row's next); time = position."""
    us, it, ts, rt = [], [], [], []
    split_of: dict[str, list[int]] = {}
    base = 0
    user_names: list[str] = []
    for split, rows in rows_by_split.items():
        start = len(us)
        seen: set[int] = set()
        for r in rows:
            u = base + r.user
            if r.user not in seen:
                seen.add(r.user)
                user_names.append(f"{split}-{r.user}")
                for k, h in enumerate(r.history):
                    us.append(u); it.append(h); ts.append(k)
                    rt.append(r.history_ratings[k] if r.history_ratings else np.nan)
                pos = len(r.history)
            us.append(u); it.append(r.next); ts.append(pos)
            rt.append(np.nan if r.next_rating is None else r.next_rating)
            pos += 1
        base += len(seen)
        split_of[split] = list(range(start, len(us)))
    rating = np.asarray(rt, dtype=np.float64)
    has_rating = bool(len(rating)) and not np.isnan(rating).any()
    inter = Interactions(user=np.asarray(us), item=np.asarray(it), n_users=base, n_items=n_items,
                         timestamp=np.asarray(ts, dtype=np.float64), rating=rating if has_rating else None,
                         user_ids=np.asarray(user_names), item_ids=np.arange(n_items).astype(str), source=source)
    return inter, {s: inter.subset(np.asarray(ix, dtype=np.int64), source=f"{source}:{s}") for s, ix in split_of.items()}


def read_llara_lastfm(folder: str | Path) -> SequenceDataset:
    """LLaRA/S-DPO LastFM: ``derived-jsonl/{train,val,test}.jsonl.gz`` + ``id2name.txt`` (never the pickles).

    ``rows`` keeps every given row (including short histories; LLaRA keeps ``len(history) >= 3``);
    ``splits`` holds the reconstructed per-user sequences (users split 976/122/122),
    ``timestamp`` = position in the user's sequence.
    """
    folder = Path(folder)
    catalog = read_id2name(folder / "id2name.txt")
    rows = {s: read_llara_rows(folder / "derived-jsonl" / f"{s}.jsonl.gz", len(catalog))
            for s in ("train", "val", "test")}
    inter, splits = _rows_to_interactions(rows, len(catalog), str(folder))
    return SequenceDataset(name="llara-lastfm", interactions=inter, catalog=catalog, splits=splits, rows=rows)


def read_llara_movielens(folder: str | Path, ml100k_folder: str | Path) -> SequenceDataset:
    """LLaRA MovieLens-100K val/test rows (``[item, rating]`` pairs, item = movie_id - 1) + ``u.item`` titles."""
    folder = Path(folder)
    item_path = Path(ml100k_folder) / "u.item"
    if not item_path.exists():
        raise DataError("MovieLens-100K u.item not found (titles of llara-movielens)", where=str(item_path),
                        fix="put ml-100k/ beside llara-movielens/ in the data folder")
    titles, genres = _read_ml100k_items(item_path)
    catalog = ItemCatalog(titles=titles, meta={"genres": genres}, source=str(item_path))
    rows = {s: read_llara_rows(folder / "derived-jsonl" / f"{s}.jsonl.gz", len(catalog)) for s in ("val", "test")}
    inter, splits = _rows_to_interactions(rows, len(catalog), str(folder))
    return SequenceDataset(name="llara-movielens", interactions=inter, catalog=catalog, splits=splits, rows=rows)


# ----------------------------------------------------------------------------- S-DPO preference JSON
SDPO_FIX = ('each record is {"historyList": "a::b::c" or [titles], "itemList": [candidate titles], '
            '"trueSelection": title}')


def _json_records(path: Path) -> list[tuple[int, Any]]:
    """Records of a JSON array or JSON Lines file, each with the line it starts on."""
    raw = _read_bytes(path, "preference file", "check the path")
    text = _decode(raw, path, "utf-8").lstrip("\ufeff")
    stripped = text.lstrip()
    if not stripped:
        raise DataError("the file is empty", where=str(path), fix="give a JSON array or JSON Lines of records")
    if not stripped.startswith("["):
        return _jsonl_rows(path)
    from prefrec.safeio import check_depth

    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    out = []

    def skip(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        return out
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", where=where(path, e.lineno), fix=SDPO_FIX) from None
        except RecursionError:
            raise DataError("JSON nested too deeply", where=where(path, line), fix=SDPO_FIX) from None
        check_depth(obj, where(path, line), DataError, SDPO_FIX)
        out.append((line, obj))
        pos = skip(pos)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return out
        raise DataError("expected ',' or ']' between records", where=where(path, text.count("\n", 0, pos) + 1),
                        fix=SDPO_FIX)


def read_sdpo_json(path: str | Path, catalog: ItemCatalog | None = None) -> list:
    """S-DPO preference records (JSON array or JSONL) -> ``list[LMSample]`` with ``prompt=""``.

    Checks per record: non-empty history, unique candidates, the target among the candidates
    and, with a catalog, every history item and candidate in it (then ``history_ids`` and
    ``item_ids`` are filled).
    """
    from prefrec.lm.samples import LMSample

    path = Path(path)
    out = []
    for line, rec in _json_records(path):
        loc = where(path, line)
        if not isinstance(rec, dict):
            raise DataError(f"record is a {type(rec).__name__}, not an object", where=loc, fix=SDPO_FIX)
        missing = [k for k in ("historyList", "itemList", "trueSelection") if k not in rec]
        if missing:
            raise DataError(f"record lacks {', '.join(missing)}", where=loc, fix=SDPO_FIX)
        hist = rec["historyList"]
        if isinstance(hist, str):
            hist = [h.strip() for h in hist.split("::")] if hist.strip() else []
        if not isinstance(hist, list) or not all(isinstance(h, str) for h in hist):
            raise DataError("historyList is neither a '::'-joined string nor a list of titles", where=loc, fix=SDPO_FIX)
        if not hist or not all(hist):
            raise DataError("empty history" if not hist else "empty title in historyList", where=loc,
                            fix="drop records without a history (S-DPO keeps histories of 3+ items)")
        cands = rec["itemList"]
        if not isinstance(cands, list) or not cands or not all(isinstance(c, str) for c in cands):
            raise DataError("itemList is not a non-empty list of titles", where=loc, fix=SDPO_FIX)
        dup = [c for c in dict.fromkeys(cands) if cands.count(c) > 1]
        if dup:
            raise DataError(f"duplicate candidate {dup[0]!r} in itemList", where=loc,
                            fix="each candidate must appear once; re-sample the negatives")
        target = rec["trueSelection"]
        if not isinstance(target, str) or target not in cands:
            raise DataError(f"trueSelection {target!r} is not among the {len(cands)} candidates", where=loc,
                            fix="the itemList must contain the target exactly once")
        h_ids = c_ids = None
        if catalog is not None:
            h_ids = [catalog.index_of(h, where=f"{loc}, historyList") for h in hist]
            c_ids = [catalog.index_of(c, where=f"{loc}, itemList") for c in cands]
        out.append(LMSample(prompt="", history=hist, candidates=list(cands), target_index=cands.index(target),
                            history_ids=h_ids, item_ids=c_ids, extra={"source": loc}))
    if not out:
        raise DataError("no records", where=str(path), fix="give a JSON array or JSON Lines of records")
    return out


# ----------------------------------------------------------------------------- generic CSV / Parquet
COLUMN_GUESSES: dict[str, tuple[str, ...]] = {
    "user": ("user", "user_id", "userId", "userID", "UserId", "uid", "user_procid"),
    "item": ("item", "item_id", "itemId", "itemID", "movieId", "movie_id", "artistID", "asin", "iid", "item_procid"),
    "timestamp": ("timestamp", "time", "ts", "unix_timestamp", "datetime", "date"),
    "rating": ("rating", "weight", "score", "plays", "count"),
    "title": ("title", "name", "item_name"),
}
TABLE_FIX = "pass columns={'user': ..., 'item': ..., 'timestamp': ..., 'rating': ..., 'title': ...} naming your columns"


def _resolve_columns(available: Sequence[str], columns: dict[str, str] | None, loc: str) -> dict[str, str]:
    columns = dict(columns or {})
    unknown = set(columns) - set(COLUMN_GUESSES)
    if unknown:
        raise DataError(f"unknown role(s) {sorted(unknown)} in columns", where="columns",
                        fix=f"roles are {', '.join(COLUMN_GUESSES)}")
    out = {}
    for role, guesses in COLUMN_GUESSES.items():
        if role in columns:
            if columns[role] not in available:
                raise DataError(f"missing column {columns[role]!r} (for {role}); the file has "
                                f"{', '.join(map(repr, available))}", where=where(loc, 1), fix=TABLE_FIX)
            out[role] = columns[role]
            continue
        hit = next((g for g in guesses if g in available), None)
        if hit is None and role in ("user", "item"):
            raise DataError(f"no {role} column (looked for {', '.join(guesses[:4])}, ...); the file has "
                            f"{', '.join(map(repr, available))}", where=where(loc, 1), fix=TABLE_FIX)
        if hit is not None:
            out[role] = hit
    return out


def read_table(path: str | Path, columns: dict[str, str] | None = None, sep: str | None = None,
               encoding: str = "utf-8", name: str | None = None) -> Dataset:
    """A CSV/TSV (separator sniffed unless ``sep``) or Parquet file with one interaction per row.

    ``columns`` maps roles (user, item, timestamp, rating, title) to column names; unmapped roles
    are guessed from common names (userId, movieId, ...). Ids may be any strings; they are indexed
    in sorted order. Timestamps are numbers or ISO dates; ratings must be finite numbers.
    """
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise DataError("table file not found" if not path.exists() else "expected a table file, found a folder",
                        where=str(path), fix="check the path")
    if path.suffix.lower() in (".parquet", ".pq"):
        data, loc, line_of = _parquet_columns(path, columns)
    else:
        raw = _read_bytes(path, "table file", "check the path")
        t = _parse_table(raw, str(path), sep=sep, encoding=encoding, quoting=True, fix=TABLE_FIX)
        roles = _resolve_columns(t.columns, columns, t.loc)
        data = {role: t.data[col] for role, col in roles.items()}
        loc, line_of = t.loc, t.line_of
        conv = {role: col for role, col in roles.items()}
        if "rating" in data:
            data["rating"] = t.floats(conv["rating"], "ratings must be numbers")
        if "timestamp" in data:
            data["timestamp"] = _timestamps(t.data[conv["timestamp"]], t, conv["timestamp"])
    return _table_dataset(data, loc, line_of, name or path.stem)


def _timestamps(vals: np.ndarray, t: _Table | None, col: str, loc: str = "", line_of=None) -> np.ndarray:
    """Numeric seconds, or ISO-8601 dates/datetimes (converted to UTC seconds)."""
    try:
        return t.floats(col, "timestamps are numbers or ISO dates") if t is not None else vals.astype(np.float64)
    except (DataError, ValueError):
        pass
    out = np.empty(len(vals), dtype=np.float64)
    for r, v in enumerate(vals):
        try:
            out[r] = float(v)
        except ValueError:
            try:
                out[r] = np.datetime64(str(v).strip().replace(" ", "T"), "s").astype(np.int64)
            except ValueError:
                line = t.line_of(r) if t is not None else (line_of(r) if line_of else None)
                raise DataError(f"timestamp {_short(v)} is neither a number nor an ISO date",
                                where=where(t.loc if t is not None else loc, line, col),
                                fix="use unix seconds or YYYY-MM-DD[ HH:MM:SS]") from None
    if not np.isfinite(out).all():
        r = int(np.flatnonzero(~np.isfinite(out))[0])
        line = t.line_of(r) if t is not None else (line_of(r) if line_of else None)
        raise DataError("timestamp is NaN or infinite", where=where(t.loc if t is not None else loc, line, col),
                        fix="give every row a finite timestamp")
    return out


def _parquet_columns(path: Path, columns: dict[str, str] | None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    loc = str(path)
    try:
        tab = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError, MemoryError) as e:
        raise DataError(f"not a readable Parquet file ({e})", where=loc, fix="re-write the file with pyarrow/pandas") from None
    if tab.num_rows == 0:
        raise DataError("the file has no rows", where=loc, fix="give a table with one interaction per row")
    roles = _resolve_columns(tab.column_names, columns, loc)

    def line_of(r: int) -> int:
        return r + 1

    data: dict[str, np.ndarray] = {}
    for role, col in roles.items():
        arr = tab.column(col)
        if arr.null_count:
            r = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{col} is missing (null)", where=f"{loc}, row {r + 1}, column {col!r}",
                            fix=f"fill or drop rows without a {role}")
        vals = arr.to_numpy(zero_copy_only=False)
        if role in ("user", "item") and vals.dtype.kind == "f" and not np.isfinite(vals).all():
            r = int(np.flatnonzero(~np.isfinite(vals))[0])
            raise DataError(f"{col} is NaN or infinite (not an id)", where=f"{loc}, row {r + 1}, column {col!r}",
                            fix=f"drop the rows without a {role}, or store ids as integers/strings")
        if role == "rating":
            try:
                vals = vals.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{col} is not numeric", where=f"{loc}, column {col!r}", fix="ratings must be numbers") from None
            bad = ~np.isfinite(vals)
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DataError(f"{col} is NaN or infinite", where=f"{loc}, row {r + 1}, column {col!r}",
                                fix=f"give every row a finite {col}, or drop the rows without one")
        elif role == "timestamp":
            if np.issubdtype(vals.dtype, np.datetime64):
                vals = vals.astype("datetime64[s]").astype(np.int64).astype(np.float64)
            else:
                vals = _timestamps(vals, None, col, loc, line_of)
        data[role] = vals
    return data, loc, line_of


def _table_dataset(data: dict[str, np.ndarray], loc: str, line_of, name: str) -> Dataset:
    for role in ("user", "item"):
        ids = np.asarray(data[role]).astype(str)
        empty = np.char.str_len(np.char.strip(ids)) == 0
        if empty.any():
            r = int(np.flatnonzero(empty)[0])
            raise DataError(f"the {role} id is empty", where=where(loc, line_of(r), role),
                            fix=f"give every row a {role} id, or drop the rows without one")
    u_idx, u_ids = index_ids(np.asarray(data["user"]).astype(str))
    i_idx, i_ids = index_ids(np.asarray(data["item"]).astype(str))
    catalog = None
    if "title" in data:
        titles = [""] * len(i_ids)
        first = np.unique(i_idx, return_index=True)[1]
        for i, r in zip(np.unique(i_idx), first):
            titles[int(i)] = str(data["title"][r])
        catalog = ItemCatalog(titles=titles, source=loc)
    inter = Interactions(user=u_idx, item=i_idx, n_users=len(u_ids), n_items=len(i_ids),
                         timestamp=data.get("timestamp"), rating=data.get("rating"),
                         user_ids=u_ids, item_ids=i_ids, source=loc)
    return Dataset(name=name, interactions=inter, catalog=catalog)


# ----------------------------------------------------------------------------- dispatch by path
def read_path(path: str | Path) -> Dataset:
    """Read a dataset from a path: a folder in a known layout, a ``proc.zip``, a table or an S-DPO JSON."""
    p = Path(path)
    if p.is_dir():
        if (p / "u.data").exists():
            return read_ml100k(p)
        if (p / "user_taggedartists.dat").exists():
            return read_lastfm_hetrec(p)
        if (p / "id2name.txt").exists() and (p / "derived-jsonl" / "train.jsonl.gz").exists():
            return read_llara_lastfm(p)
        if (p / "proc.zip").exists():
            return read_irbench_zip(p / "proc.zip", name=p.name)
        raise DataError("folder is in no known layout", where=str(p),
                        fix="give ml-100k/ (u.data), lastfm-hetrec2011/, llara-lastfm/, a proc.zip, or a table file")
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes[-1:] == [".zip"]:
        return read_irbench_zip(p)
    if suffixes and suffixes[-1] in (".json", ".jsonl") or suffixes[-2:] in ([".json", ".gz"], [".jsonl", ".gz"]):
        return sdpo_dataset(read_sdpo_json(p), str(p))
    return read_table(p)


def sdpo_dataset(samples: list, source: str) -> Dataset:
    """View S-DPO records as a dataset: one pseudo-user per record (history, then target; time = position)."""
    titles: dict[str, int] = {}
    us, it, ts = [], [], []
    for k, s in enumerate(samples):
        for pos, t in enumerate([*s.history, s.target]):
            us.append(k); it.append(titles.setdefault(t, len(titles))); ts.append(pos)
    inter = Interactions(user=np.asarray(us), item=np.asarray(it), n_users=len(samples), n_items=len(titles),
                         timestamp=np.asarray(ts, dtype=np.float64), source=source)
    return Dataset(name=Path(source).stem, interactions=inter, catalog=ItemCatalog(titles=list(titles), source=source))
