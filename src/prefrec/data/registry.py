"""Dataset names -> readers, relative to the data directory.

``load_dataset("ml-100k")`` reads ``<data_dir>/ml-100k``; IR-Benchmark names read
``<data_dir>/ir-benchmark/{iid,ood}/<name>/proc.zip`` straight from the zip. ``sha256`` and
``url`` (optional) let ``prefrec data download`` fetch a dataset that has a public URL.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefrec.data.datadir import data_dir as resolve_data_dir
from prefrec.data.download import Remote
from prefrec.data.interactions import Dataset
from prefrec.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: how to load it from the data dir, and (optionally) where to download it.

    ``remote.sha256`` may be None when the upstream digest is unknown; pin it with
    ``register_dataset(name, dataclasses.replace(spec, remote=dataclasses.replace(spec.remote, sha256=...)))``
    or per call with ``prefrec data download <name> --sha256 <hex>``.
    """

    description: str
    load: Callable[[Path], Dataset]
    remote: Remote | None = None


def _irbench(kind: str, name: str) -> DatasetSpec:
    def load(root: Path) -> Dataset:
        from prefrec.data.readers import read_irbench_zip

        return read_irbench_zip(root / "ir-benchmark" / kind / name / "proc.zip", name=name)

    return DatasetSpec(f"IR-Benchmark {kind.upper()} split ({name}), train/test, implicit", load)


def _ml100k(root: Path) -> Dataset:
    from prefrec.data.readers import read_ml100k

    return read_ml100k(root / "ml-100k")


def _lastfm_hetrec(source: str) -> Callable[[Path], Dataset]:
    def load(root: Path) -> Dataset:
        from prefrec.data.readers import read_lastfm_hetrec

        return read_lastfm_hetrec(root / "lastfm-hetrec2011", source=source)

    return load


def _llara_lastfm(root: Path) -> Dataset:
    from prefrec.data.readers import read_llara_lastfm

    return read_llara_lastfm(root / "llara-lastfm")


def _llara_movielens(root: Path) -> Dataset:
    from prefrec.data.readers import read_llara_movielens

    return read_llara_movielens(root / "llara-movielens", root / "ml-100k")


ML100K_FILES = (("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
                ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"))
"""sha256 of the files the reader uses, computed from the shared data copy of ml-100k (byte-identical
to GroupLens' release per its README: 1,979,173 and 236,344 bytes). The zip's own digest is not
pinned: the archive was not available here to hash."""

DATASETS: dict[str, DatasetSpec] = {
    "ml-100k": DatasetSpec("MovieLens-100K raw (ratings, timestamps, titles, genres)", _ml100k,
                           remote=Remote("https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                                         folder="ml-100k", sha256=None, files=ML100K_FILES)),
    "lastfm-hetrec": DatasetSpec("HetRec 2011 Last.fm: dated first tag per (user, artist), plays as rating, names",
                                 _lastfm_hetrec("tagged")),
    "lastfm-hetrec-plays": DatasetSpec("HetRec 2011 Last.fm: user_artists play counts (no time), names",
                                       _lastfm_hetrec("plays")),
    "llara-lastfm": DatasetSpec("LLaRA/S-DPO LastFM sequence rows, users split 976/122/122, artist names",
                                _llara_lastfm),
    "llara-movielens": DatasetSpec("LLaRA MovieLens-100K val/test sequence rows (with ratings), titles",
                                   _llara_movielens),
}
for _n in ("amazon2014-beauty", "amazon2014-electronic", "amazon2014-health", "gowalla", "movielens-100k",
           "movielens-1m"):
    DATASETS[_n] = _irbench("iid", _n)
for _n in ("amazon2014-electronic-popularity", "gowalla-popularity", "movielens-1m-temporal"):
    DATASETS[_n] = _irbench("ood", _n)


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Add a named dataset (used by readers defined elsewhere)."""
    DATASETS[name] = spec


def find_irbench(name: str, data_dir: str | Path | None = None) -> Path | None:
    """``proc.zip`` of an IR-Benchmark dataset that is in the data folder but not registered:
    ``<data>/ir-benchmark/{iid,ood}/<name>/proc.zip``, else ``<data>/<name>/proc.zip``, else the
    one ``<name>/proc.zip`` at most three folders deep (several matches are an error)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    root = resolve_data_dir(data_dir)
    for cand in (root / "ir-benchmark" / "iid" / name / "proc.zip", root / "ir-benchmark" / "ood" / name / "proc.zip",
                 root / name / "proc.zip"):
        if cand.is_file():
            return cand
    hits = sorted(p for depth in ("*/", "*/*/", "*/*/*/") for p in root.glob(f"{depth}{name}/proc.zip") if p.is_file())
    if len(hits) > 1:
        raise DataError(f"dataset name {name!r} matches {len(hits)} archives: {', '.join(map(str, hits[:4]))}",
                        where=str(root), fix="pass the path of the proc.zip you mean as the dataset")
    return hits[0] if hits else None


ACCEPTED_FORMS = ("a registered name (`prefrec data list`); the folder name of any IR-Benchmark proc.zip in "
                  "the data folder (<data>/ir-benchmark/{iid,ood}/<name>/proc.zip); a path to a file or folder "
                  "(CSV/TSV/Parquet table, proc.zip, S-DPO JSON, a dataset folder); a data card "
                  "(card.yaml, see docs/datasets.md) or table?user=COL&item=COL&...")


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Load a dataset by registered name, by the folder name of an IR-Benchmark archive in the
    data folder, by data card / log spec (:mod:`prefrec.data.logs`), or by path (see readers)."""
    if name in DATASETS:
        return DATASETS[name].load(resolve_data_dir(data_dir))
    from prefrec.data import logs

    if logs.is_log_spec(name):
        return logs.read_log(logs.parse_spec(name), need_titles=False)
    p = Path(name)
    if p.exists():
        from prefrec.data import readers

        loader = getattr(readers, "read_path", None)
        if loader is not None:
            return loader(p)
    found = find_irbench(name, data_dir)
    if found is not None:
        from prefrec.data.readers import read_irbench_zip

        return read_irbench_zip(found, name=name)
    close = difflib.get_close_matches(name, DATASETS.keys(), n=1)
    raise DataError(f"unknown dataset {name!r} (no registered name, file, or {name}/proc.zip under "
                    f"{resolve_data_dir(data_dir)})", where="dataset",
                    fix=(f"did you mean {close[0]!r}? " if close else "") + "give " + ACCEPTED_FORMS)


def dataset_known(name: str, data_dir: str | Path | None = None) -> bool:
    """Whether :func:`load_dataset` can resolve ``name`` without reading the data (config checks)."""
    from prefrec.data import logs

    return (name in DATASETS or logs.is_log_spec(name) or Path(name).exists()
            or find_irbench(name, data_dir) is not None)
