"""Case sources: every dataset string an LM command accepts -> catalog + per-split cases.

Why one dispatcher: ``sft``, the preference trainers, ``evaluate-lm``, ``baseline``, NAPO's
SASRec and ``prefrec run`` must see the *same* cases for the same ``(dataset, seed)``; they
all come through :func:`case_source`, and ``--limit/--seed`` subsample the result the same way
(:func:`prefrec.lm.prompts._subsample`).

Accepted dataset strings:

* ``ml-100k`` (LLaRA-style user split with the seed), ``llara-lastfm``, ``llara-movielens``;
* an S-DPO JSON file or a folder of ``<split>.json`` files. A file whose name holds a split word
  (``lastfm-test.json``) brings its siblings (``lastfm-train.json``, ``lastfm-val.json``) into the
  same catalog, so every command numbers the titles identically;
* an interaction log: a data card (``card.yaml``), ``table?user=..&item=..`` or a plain
  CSV/Parquet/Hugging Face folder (:mod:`prefrec.data.logs`);
* any other dataset with titles that :func:`prefrec.data.registry.load_dataset` reads
  (``lastfm-hetrec``, a table path, ...): cases built as for a log.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from prefrec.data.interactions import ItemCatalog
from prefrec.data.sequences import SequenceCase
from prefrec.errors import ConfigError, DataError

ML100K_NAMES = ("ml-100k", "ml100k", "movielens")
LLARA_NAMES = {"llara-lastfm": "llara-lastfm", "lastfm": "llara-lastfm", "llara-movielens": "llara-movielens"}
REGISTERED_DOMAINS = {"ml-100k": "movies", "ml100k": "movies", "movielens": "movies", "llara-movielens": "movies",
                      "llara-lastfm": "music", "lastfm": "music", "lastfm-hetrec": "music",
                      "lastfm-hetrec-plays": "music"}
SPLIT_WORDS = {"train": ("train",), "val": ("val", "valid", "validation", "dev"), "test": ("test",)}
_SPLIT_RE = re.compile(r"(?<![A-Za-z])(train|validation|valid|val|dev|test)(?![A-Za-z])", re.I)
JSON_SUFFIXES = (".json", ".jsonl")


@dataclass
class CaseSource:
    """A dataset's catalog and cases. ``any_split`` is used for a split that has no cases of its
    own (a single JSON file without a split word in its name)."""

    name: str
    catalog: ItemCatalog
    splits: dict[str, list[SequenceCase]]
    domain: str
    title_fn: Callable[[str], str] | None = None
    any_split: list[SequenceCase] | None = None
    dataset: object = field(default=None, repr=False)

    @property
    def n_items(self) -> int:
        return len(self.catalog)

    def cases(self, split: str) -> list[SequenceCase]:
        if split in self.splits:
            return self.splits[split]
        if self.any_split is not None:
            return self.any_split
        raise ConfigError(f"{self.name} has no split {split!r}", where="split",
                          fix=f"use one of {', '.join(self.splits)}")


def path_domain(name: str, default: str = "items") -> str:
    """Domain from words in a dataset name or path (``lastfm-test.json`` -> music)."""
    from prefrec.lm.prompts import _PATH_WORDS

    parts = Path(str(name).split("?", 1)[0]).parts
    low = "/".join(parts[-2:]).lower()  # the file and its folder, not the whole absolute path
    for dom, words in _PATH_WORDS:
        if any(w in low for w in words):
            return dom
    return default


def dataset_domain(dataset: str) -> str:
    """The prompt domain a dataset gets when the config names none."""
    if dataset in REGISTERED_DOMAINS:
        return REGISTERED_DOMAINS[dataset]
    from prefrec.data import logs

    if logs.is_log_spec(dataset):
        dom = logs.parse_spec(dataset).domain
        if dom:
            return dom
    return path_domain(dataset.split("?", 1)[0])


def source_label(dataset: str) -> str:
    """A short name for run folders: a name as it is, a path by its stem (``x/lastfm-test.json``
    -> ``lastfm-test``, ``own-data/card.yaml`` -> ``card``)."""
    if "?" not in dataset and not Path(dataset).exists() and re.fullmatch(r"[A-Za-z0-9._-]+", dataset):
        return dataset
    base = Path(dataset.split("?", 1)[0])
    stem = base.name.split(".")[0] or base.parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "dataset"


def is_json_source(dataset: str) -> bool:
    p = Path(dataset).expanduser()
    if p.is_dir():
        return any((p / f"{w}{e}").exists() for ws in SPLIT_WORDS.values() for w in ws for e in JSON_SUFFIXES)
    return any(s.lower() in JSON_SUFFIXES for s in p.suffixes[-2:]) and dataset not in REGISTERED_DOMAINS


# ----------------------------------------------------------------------------- S-DPO JSON
def json_family(path: Path) -> dict[str, Path]:
    """The split files that belong with ``path``: ``<dir>/<split>.json`` for a folder; for a file,
    the siblings whose name differs only in the split word (``x-test.json`` -> ``x-train.json``)."""
    out: dict[str, Path] = {}
    if path.is_dir():
        for split, words in SPLIT_WORDS.items():
            for w in words:
                hit = next((path / f"{w}{e}" for e in JSON_SUFFIXES if (path / f"{w}{e}").exists()), None)
                if hit is not None:
                    out[split] = hit
                    break
        return out
    m = list(_SPLIT_RE.finditer(path.name))
    if not m:
        return out
    last = m[-1]
    for split, words in SPLIT_WORDS.items():
        for w in words:
            cand = path.with_name(path.name[:last.start()] + w + path.name[last.end():])
            if cand.exists():
                out[split] = cand
                break
    return out


def json_split_file(path: Path, split: str) -> Path:
    """The file of ``split``: its family member; a file without a split word serves every split."""
    family = json_family(path)
    if split in family:
        return family[split]
    if not path.is_dir() and not _SPLIT_RE.search(path.name):
        return path
    words = "/".join(SPLIT_WORDS.get(split, (split,)))
    raise DataError(f"no {split} file beside the given one (looked for the name with {words} in place of the "
                    "split word)" if not path.is_dir() else f"no {split}.json in the folder", where=str(path),
                    fix=f"add the {split} file, or set the split to one that exists ({', '.join(family) or 'none'}); "
                        "for training without validation set eval_limit: 0")


def _json_source(dataset: str) -> CaseSource:
    from prefrec.data.readers import read_sdpo_json

    p = Path(dataset).expanduser()
    if not p.exists():
        raise DataError("no such S-DPO JSON file or folder", where=dataset,
                        fix="give a JSON file of records with historyList, itemList, trueSelection")
    family = json_family(p)
    if p.is_dir() and not family:
        raise DataError("the folder holds no train/val/test .json files", where=dataset,
                        fix="put <split>.json files (train.json, val.json, test.json) in it")
    files = list(dict.fromkeys([*family.values(), *([] if p.is_dir() else [p])]))
    from prefrec.data import alpaca

    for f in files:
        if alpaca.is_alpaca_file(f):
            raise DataError("instruction-format records ({instruction, input, output}) carry no item ids",
                            where=str(f), fix="they work for sft and dpo only; evaluate and compare "
                                              "baselines on S-DPO JSON or a log")
    titles: dict[str, int] = {}
    per_file: dict[Path, list[SequenceCase]] = {}
    offset = 0
    for f in files:
        cases = []
        for k, s in enumerate(read_sdpo_json(f)):
            ids = [titles.setdefault(t, len(titles)) for t in [*s.history, *s.candidates]]
            hist, cands = tuple(ids[:len(s.history)]), tuple(ids[len(s.history):])
            cases.append(SequenceCase(user=offset + k, history=hist, target=cands[s.target_index],
                                      candidates=cands, target_pos=s.target_index, timestamp=float(len(hist))))
        offset += len(cases)
        per_file[f] = cases
    catalog = ItemCatalog(titles=list(titles), source=str(p))
    splits = {split: per_file[f] for split, f in family.items()}
    own = None if p.is_dir() or _SPLIT_RE.search(p.name) else per_file[p]  # a lone file serves every split
    return CaseSource(name=dataset, catalog=catalog, splits=splits, domain=path_domain(str(p)),
                      any_split=own)


def history_cases(cases: list[SequenceCase], max_history: int = 10) -> list[SequenceCase]:
    """Next-item cases inside the histories only (no target, no candidates): training data for
    baselines when imported records come without a training file. Targets never leak."""
    out = []
    for c in cases:
        h = c.history
        for t in range(1, len(h)):
            out.append(SequenceCase(user=c.user, history=h[max(0, t - max_history):t], target=h[t],
                                    candidates=(), target_pos=-1, timestamp=float(t)))
    return out


# ----------------------------------------------------------------------------- dispatch
@functools.lru_cache(maxsize=8)
def _source(dataset: str, root: str, seed: int) -> CaseSource:
    from prefrec.data import logs
    from prefrec.data.registry import load_dataset
    from prefrec.data.sequences import cases_from_llara, ml100k_lm_splits
    from prefrec.lm.prompts import movie_title

    if dataset in ML100K_NAMES:
        ds = load_dataset("ml-100k", data_dir=root)
        return CaseSource("ml-100k", ds.catalog, ml100k_lm_splits(ds, seed=seed), "movies", movie_title, dataset=ds)
    if dataset in LLARA_NAMES:
        name = LLARA_NAMES[dataset]
        ds = load_dataset(name, data_dir=root)
        splits = {s: cases_from_llara(ds, s) for s in ds.rows}
        return CaseSource(name, ds.catalog, splits, REGISTERED_DOMAINS[name],
                          movie_title if name == "llara-movielens" else None, dataset=ds)
    if is_json_source(dataset) and not logs.is_log_spec(dataset):
        return _json_source(dataset)
    if logs.is_log_spec(dataset) or logs.is_table_path(dataset):
        src = logs.parse_spec(dataset)
        ds, splits = logs.log_cases(src, seed)
        return CaseSource(dataset, ds.catalog, splits, src.domain or path_domain(src.log), dataset=ds)
    ds = load_dataset(dataset, data_dir=root)
    if ds.catalog is None:
        raise DataError(f"dataset {dataset!r} has no item titles, which an LM recommender needs", where="dataset",
                        fix="use a log with an item catalogue (a data card, docs/datasets.md) or a dataset with titles")
    splits = ml100k_lm_splits(ds, seed=seed)
    return CaseSource(dataset, ds.catalog, splits, path_domain(dataset), dataset=ds)


def case_source(dataset: str, data_dir=None, seed: int = 0) -> CaseSource:
    """The catalog and cases of ``dataset`` (cached per dataset, data folder and seed)."""
    from prefrec.data.datadir import data_dir as resolve_data_dir

    if not dataset:
        raise ConfigError("no dataset given", where="dataset", fix="e.g. ml-100k, llara-lastfm or a data card")
    return _source(str(dataset), str(resolve_data_dir(data_dir)), int(seed))


def training_cases(src: CaseSource) -> list[SequenceCase]:
    """The training cases of a source; without a training split, :func:`history_cases` of all
    its cases (what baselines and popularity counts learn from)."""
    if "train" in src.splits and src.splits["train"]:
        return src.splits["train"]
    seen = {}
    for cases in [*src.splits.values(), src.any_split or []]:
        for c in cases:
            seen.setdefault((c.user, c.history, c.target), c)
    return history_cases(list(seen.values()))
