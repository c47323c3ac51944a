"""Any interaction log -> the LLaRA-style LM cases the built-in datasets use.

Why: a user's own clicks/plays/purchases (CSV, Parquet or a Hugging Face dataset saved to disk)
plus an item catalogue with titles should train and evaluate an LM recommender exactly like
``ml-100k`` does: users split 8:1:1 (seeded), sliding windows of at most 10 history items
(windows with fewer than 3 dropped), 20 candidates = the target + 19 items the user never
interacted with (:func:`prefrec.data.sequences.ml100k_lm_splits`, the same code).

A log is described by a :class:`LogSource` — the column mapping and where the titles are. It is
given as a dataset string, so it travels unchanged through every command and run folder:

* a **data card**: a YAML file of :class:`LogSource` keys (``dataset: examples/clicks/card.yaml``);
  relative paths in it are relative to the card;
* a **table path with options**: ``clicks.csv?user=uid&item=song&time=ts&catalog=songs.csv``
  (flat keys, see :data:`FLAT_KEYS`); also appended to a card to override it;
* a plain table path (``clicks.csv``): columns guessed, titles from a ``title`` column.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

import numpy as np
from pydantic import Field, ValidationError

from prefrec.config import Config
from prefrec.data.interactions import Dataset, Interactions, ItemCatalog
from prefrec.errors import ConfigError, DataError, where

log = logging.getLogger(__name__)

LOG_ROLES = ("user", "item", "time", "rating", "title")
CATALOG_ROLES = ("item", "title")
CARD_SUFFIXES = (".yaml", ".yml")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".parquet", ".pq", ".gz")
CARD_FIX = ("a data card holds log: <file>, columns: {user: .., item: .., time: .., rating: ..}, "
            "catalog: <file>, catalog_columns: {item: .., title: ..} (see docs/datasets.md)")


class LogSource(Config):
    """Where a log and its titles are, and how to turn it into LM cases."""

    log: str = Field(description="CSV/TSV/Parquet file, or a Hugging Face dataset folder (save_to_disk)")
    columns: dict[str, str] = Field(default_factory=dict, description="role -> log column; roles "
                                    "user, item, time, rating, title (unmapped roles are guessed)")
    format: Literal["auto", "csv", "parquet", "hf"] = "auto"
    sep: str | None = Field(None, description="CSV separator (default: sniffed)")
    hf_split: str | None = Field(None, description="split of a saved DatasetDict (default: all, concatenated)")
    catalog: str | None = Field(None, description="item table with titles (default: the log's title column)")
    catalog_columns: dict[str, str] = Field(default_factory=dict, description="role -> catalog column; "
                                            "roles item, title (guessed like the log's)")
    text_fields: list[str] = Field(default_factory=list, description="catalog columns kept as item metadata")
    title_format: str | None = Field(None, description="displayed title from catalog fields, e.g. "
                                     "'{title} ({year})'; default: the title")
    domain: str | None = Field(None, description="prompt domain (movie, music, book, product, item, ...)")
    min_rating: float | None = Field(None, description="keep only rows rated at least this (needs rating)")
    unknown_items: Literal["drop", "error"] = Field("drop", description="log items missing from the catalog")
    max_history: int = Field(10, ge=1)
    min_history: int = Field(3, ge=1)
    n_candidates: int = Field(20, ge=2)


# flat key -> (section, role) for `table?key=value&...`
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{r: ("columns", r) for r in LOG_ROLES}, "timestamp": ("columns", "time"),
    "catalog_item": ("catalog_columns", "item"), "catalog_title": ("catalog_columns", "title"),
}


def is_log_spec(name: str) -> bool:
    """A data card (``*.yaml``) or a table path with ``?key=value`` options."""
    base = str(name).split("?", 1)[0]
    return base.lower().endswith(CARD_SUFFIXES) or ("?" in str(name) and "=" in str(name).split("?", 1)[1])


def is_table_path(name: str) -> bool:
    """A plain log file or Hugging Face dataset folder (columns guessed)."""
    p = Path(name)
    if p.is_dir():
        return _is_hf_folder(p)
    return p.is_file() and any(s.lower() in TABLE_SUFFIXES for s in p.suffixes) and \
        not any(s.lower() in (".json", ".jsonl", ".zip") for s in p.suffixes)


def _is_hf_folder(p: Path) -> bool:
    return any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def parse_spec(name: str) -> LogSource:
    """The :class:`LogSource` of a data card, ``table?options`` or plain table path."""
    name = str(name)
    base, _, query = name.partition("?")
    data: dict = {}
    root = Path(".")
    if base.lower().endswith(CARD_SUFFIXES):
        from prefrec.config import read_yaml

        card = Path(base)
        if not card.is_file():
            raise DataError("data card not found", where=base, fix="check the path; " + CARD_FIX)
        data = read_yaml(card) or {}
        if not isinstance(data, dict):
            raise DataError("a data card is a YAML mapping", where=base, fix=CARD_FIX)
        root = card.parent
    else:
        data = {"log": base}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key in FLAT_KEYS:
            sec, role = FLAT_KEYS[key]
            data.setdefault(sec, {})
            data[sec] = {**data[sec], role: value}
        elif key == "text_fields":
            data[key] = [v for v in value.split(",") if v]
        elif key in LogSource.model_fields:
            data[key] = value
        else:
            raise ConfigError(f"unknown log option {key!r} in {name!r}", where="dataset",
                              fix=f"use {', '.join([*FLAT_KEYS, *(k for k in LogSource.model_fields if k not in ('columns', 'catalog_columns'))])}")
    if "timestamp" in data.get("columns", {}):
        data["columns"] = {("time" if k == "timestamp" else k): v for k, v in data["columns"].items()}
    try:
        src = LogSource(**data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", where=base, fix=CARD_FIX) from None
    bad = set(src.columns) - set(LOG_ROLES)
    if bad:
        raise ConfigError(f"unknown column role(s) {sorted(bad)}", where=f"{base}: columns",
                          fix=f"roles are {', '.join(LOG_ROLES)}")
    bad = set(src.catalog_columns) - set(CATALOG_ROLES)
    if bad:
        raise ConfigError(f"unknown catalog role(s) {sorted(bad)}", where=f"{base}: catalog_columns",
                          fix=f"roles are {', '.join(CATALOG_ROLES)}; other fields go to text_fields")
    if src.min_history > src.max_history:
        raise ConfigError(f"min_history {src.min_history} > max_history {src.max_history}", where=base,
                          fix="LLaRA/S-DPO use max_history: 10, min_history: 3")
    fix_path = lambda s: s if s is None or Path(s).is_absolute() else str(root / s)  # noqa: E731
    return src.model_copy(update={"log": fix_path(src.log), "catalog": fix_path(src.catalog)})


# ----------------------------------------------------------------------------- reading
def read_log(src: LogSource, need_titles: bool = True) -> Dataset:
    """The log as a :class:`Dataset` whose catalog holds every item's displayed title.
    ``need_titles=False`` (CF use) returns a log without titles with ``catalog=None``."""
    from prefrec.data.readers import read_table

    path = Path(src.log)
    if not path.exists():
        raise DataError("interaction log not found", where=src.log, fix="check the log: path (relative to the card)")
    fmt = src.format
    if fmt == "auto":
        fmt = "hf" if path.is_dir() else ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    columns = {("timestamp" if r == "time" else r): c for r, c in src.columns.items()}
    if fmt == "hf":
        with tempfile.TemporaryDirectory(prefix="prefrec-hf-") as tmp:
            pq_path = _hf_to_parquet(path, src.hf_split, Path(tmp) / f"{path.name}.parquet")
            ds = read_table(pq_path, columns=columns, name=path.name)
        ds.interactions = _with_source(ds.interactions, str(path))
    else:
        if fmt == "parquet" and path.suffix.lower() not in (".parquet", ".pq"):
            raise DataError("format: parquet needs a .parquet or .pq file", where=src.log, fix="rename the file")
        ds = read_table(path, columns=columns, sep=src.sep, name=path.name.split(".")[0])
    inter = ds.interactions
    if src.min_rating is not None:
        if inter.rating is None:
            raise ConfigError("min_rating needs a rating column", where=f"{src.log}: min_rating",
                              fix="map columns.rating, or remove min_rating")
        inter = inter.subset(inter.rating >= src.min_rating)
    if src.catalog:
        titles, meta = _catalog_titles(src, inter.item_ids)
    elif ds.catalog is not None:
        titles, meta = list(ds.catalog.titles), {}
        if src.title_format:
            titles = [_format_title(src.title_format, {"title": t}, src.log, i) for i, t in enumerate(titles)]
    elif not need_titles:
        return Dataset(name=ds.name, interactions=inter, catalog=None)
    else:
        raise DataError("the log has no item titles (an LM recommender names items by title)", where=src.log,
                        fix="add catalog: items.csv (columns item, title), or a title column in the log "
                            "(columns: {title: <column>})")
    keep = np.asarray([t is not None for t in titles])
    if not keep.all():
        missing = [str(inter.item_ids[i]) for i in np.flatnonzero(~keep)[:5]]
        if src.unknown_items == "error":
            raise DataError(f"{int((~keep).sum())} log item(s) are not in the catalog (e.g. {', '.join(missing)})",
                            where=src.catalog or src.log, fix="add them to the catalog, or set unknown_items: drop")
        log.warning("%s: dropped %d of %d items missing from the catalog (e.g. %s)", src.log, int((~keep).sum()),
                    len(keep), ", ".join(missing))
    for i, t in enumerate(titles):
        if t is not None and not str(t).strip():
            raise DataError(f"item {inter.item_ids[i]!s} has an empty title", where=src.catalog or src.log,
                            fix="give every item a non-empty title")
    inter, titles, meta = _compact(inter, keep, titles, meta, src.log)
    catalog = ItemCatalog(titles=titles, meta=meta, source=src.catalog or src.log)
    return Dataset(name=ds.name, interactions=inter, catalog=catalog)


def _with_source(inter: Interactions, source: str) -> Interactions:
    return Interactions(user=inter.user, item=inter.item, n_users=inter.n_users, n_items=inter.n_items,
                        timestamp=inter.timestamp, rating=inter.rating, user_ids=inter.user_ids,
                        item_ids=inter.item_ids, source=source)


def _compact(inter: Interactions, keep: np.ndarray, titles: list, meta: dict, loc: str):
    """Drop items without a title (and their rows), renumber the rest 0..n-1 (order kept)."""
    rows = keep[inter.item]
    if not rows.any():
        raise DataError("no log row has an item with a title", where=loc,
                        fix="check that the catalog's item column holds the log's item ids")
    new = np.cumsum(keep) - 1
    users_left = np.unique(inter.user[rows])
    unew = np.full(inter.n_users, -1, dtype=np.int64)
    unew[users_left] = np.arange(len(users_left))
    out = Interactions(user=unew[inter.user[rows]], item=new[inter.item[rows]], n_users=len(users_left),
                       n_items=int(keep.sum()),
                       timestamp=None if inter.timestamp is None else inter.timestamp[rows],
                       rating=None if inter.rating is None else inter.rating[rows],
                       user_ids=None if inter.user_ids is None else inter.user_ids[users_left],
                       item_ids=None if inter.item_ids is None else inter.item_ids[keep], source=inter.source)
    titles = [t for t, k in zip(titles, keep) if k]
    meta = {k: [v for v, kk in zip(vals, keep) if kk] for k, vals in meta.items()}
    return out, titles, meta


def _hf_to_parquet(path: Path, split: str | None, out: Path) -> Path:
    """A ``datasets`` folder written by ``save_to_disk`` -> one Parquet file (read like any table)."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading a Hugging Face dataset folder needs the `datasets` package", where=str(path),
                        fix="pip install datasets  (or export it once: datasets.load_from_disk(dir)"
                            ".to_parquet('log.parquet'), and give the .parquet file)") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise DataError(f"not a dataset saved with save_to_disk ({e})", where=str(path),
                        fix="give the folder written by Dataset.save_to_disk, or a CSV/Parquet file") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is not None:
            if split not in ds:
                raise ConfigError(f"the dataset has no split {split!r}", where=f"{path}: hf_split",
                                  fix=f"use one of {', '.join(ds)}")
            ds = ds[split]
        else:
            ds = datasets.concatenate_datasets([ds[k] for k in ds])
    ds.to_parquet(str(out))
    return out


def _read_catalog_table(path: Path, sep: str | None):
    """Catalog columns as ``(names, {name: str array}, line_of)``."""
    if not path.exists():
        raise DataError("item catalog not found", where=str(path), fix="check the catalog: path (relative to the card)")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            tab = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"not a readable Parquet file ({e})", where=str(path),
                            fix="re-write the file with pyarrow/pandas") from None
        data = {c: np.asarray(tab.column(c).to_pylist(), dtype=object) for c in tab.column_names}
        return tab.column_names, data, lambda r: r + 1
    from prefrec.data.readers import _parse_table, _read_bytes

    t = _parse_table(_read_bytes(path, "item catalog", "check the path"), str(path), sep=sep, quoting=True,
                     fix="the catalog is a table with a header: one row per item (id, title, ...)")
    return t.columns, t.data, t.line_of


def _guess(available, role: str, given: str | None, loc: str) -> str:
    from prefrec.data.readers import COLUMN_GUESSES

    if given is not None:
        if given not in available:
            raise DataError(f"missing catalog column {given!r} (for {role}); the file has "
                            f"{', '.join(map(repr, available))}", where=where(loc, 1),
                            fix="fix catalog_columns in the data card")
        return given
    hit = next((g for g in COLUMN_GUESSES[role] if g in available), None)
    if hit is None:
        raise DataError(f"no {role} column in the catalog (looked for {', '.join(COLUMN_GUESSES[role][:5])}, ...); "
                        f"the file has {', '.join(map(repr, available))}", where=where(loc, 1),
                        fix=f"set catalog_columns: {{{role}: <column>}} in the data card")
    return hit


def _format_title(fmt: str, row: dict, loc: str, line: int) -> str:
    try:
        return fmt.format(**row)
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"title_format {fmt!r} cannot be filled ({e!r})", where=where(loc, line),
                          fix=f"use fields of the catalog: {', '.join('{' + k + '}' for k in row)}") from None


def _catalog_titles(src: LogSource, item_ids) -> tuple[list[str | None], dict]:
    """Displayed title of every log item (None: not in the catalog) and the text fields."""
    path = Path(src.catalog)
    names, data, line_of = _read_catalog_table(path, src.sep)
    loc = str(path)
    id_col = _guess(names, "item", src.catalog_columns.get("item"), loc)
    title_col = _guess(names, "title", src.catalog_columns.get("title"), loc)
    missing = [f for f in src.text_fields if f not in names]
    if missing:
        raise DataError(f"text field(s) {missing} are not catalog columns; the file has "
                        f"{', '.join(map(repr, names))}", where=where(loc, 1), fix="fix text_fields in the data card")
    ids = [str(v) for v in data[id_col]]
    first: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i in first:
            raise DataError(f"item {i!r} appears twice in the catalog (first on line {line_of(first[i])})",
                            where=where(loc, line_of(r), id_col), fix="keep one row per item")
        first[i] = r
    titles: list[str | None] = []
    meta: dict[str, list] = {f: [] for f in src.text_fields}
    for iid in item_ids:
        r = first.get(str(iid))
        if r is None:
            titles.append(None)
            for f in meta:
                meta[f].append(None)
            continue
        raw = data[title_col][r]
        if raw is None or not str(raw).strip():
            raise DataError(f"item {iid!s} has an empty title", where=where(loc, line_of(r), title_col),
                            fix="give every item a non-empty title")
        title = str(raw).strip()
        if src.title_format:
            row = {c: ("" if data[c][r] is None else str(data[c][r])) for c in names}
            title = _format_title(src.title_format, {**row, "title": title}, loc, line_of(r)).strip()
        titles.append(title)
        for f in meta:
            meta[f].append(data[f][r])
    return titles, meta


# ----------------------------------------------------------------------------- cases
@functools.lru_cache(maxsize=4)
def _cached(spec_json: str, seed: int):
    from prefrec.data.sequences import ml100k_lm_splits

    src = LogSource.model_validate_json(spec_json)
    ds = read_log(src)
    try:
        splits = ml100k_lm_splits(ds, seed=seed, max_history=src.max_history, min_history=src.min_history,
                                  n_candidates=src.n_candidates)
    except DataError as e:
        if "negatives" not in e.what:
            raise
        raise DataError(f"{e.what} ({ds.interactions.n_items} items with titles in the log)", where=src.log,
                        fix=f"lower n_candidates (now {src.n_candidates}) in the data card, or use a larger "
                            "catalogue") from None
    for name in ("train", "test"):
        if not splits[name]:
            raise DataError(f"the {name} split has no cases ({ds.interactions.n_users} users; users are split "
                            f"8:1:1 and need more than {src.min_history} interactions each)", where=src.log,
                            fix="use a log with more users (>= 10) and longer histories, or lower min_history")
    return ds, splits


def log_cases(src: LogSource, seed: int = 0):
    """``(dataset, {"train","val","test": cases})`` of a log, built like ``ml-100k``'s (seeded)."""
    return _cached(src.model_dump_json(), seed)
