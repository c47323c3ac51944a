"""Use a trained model: ``prefrec.load(run_dir).recommend(...)``.

Why one entry point for both families: a user who trained a study wants "top-k for these users"
(CF) or "rank these candidates after this history" (LM) without knowing which trainer wrote
the folder. :func:`load` looks at the run directory and returns a :class:`CFRecommender` or an
:class:`LMRecommender`; both return plain rows (dicts) that print as CSV or JSON.

CF: the model is rebuilt from the run's ``config.yaml`` and ``best.safetensors`` (the weights the
test metrics were computed with); the data split is rebuilt from the same config and seed, so the
items masked are exactly those the evaluation masked (``mask="train"``), and the top-k list of a
user equals the evaluation's. ``mask="seen"`` also drops the validation holdout (what a product
would do: never recommend something the user already has).

LM: the adapter/weights in ``<run>/final`` are loaded with :func:`prefrec.models.lm.load_trained_lm`,
the prompt is built from the history titles by :mod:`prefrec.lm.prompts` (the training template),
and candidates are ranked by :func:`prefrec.lm.scoring.candidate_logps` (summed log-prob of
``" " + title + EOS``; the prompt is encoded once).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Sequence

from prefrec.errors import ConfigError, DataError, PrefrecError

CF_WEIGHTS = "best.safetensors"


def _run_kind(run: Path) -> str:
    if (run / CF_WEIGHTS).exists() and (run / "config.yaml").exists():
        return "cf"
    from prefrec.models.lm import META_FILE

    if (run / "final" / META_FILE).exists() or (run / META_FILE).exists():
        return "lm"
    return ""


def load(run_dir: str | Path, *, data_dir: str | Path | None = None, device: str = "auto"):
    """A recommender for a finished run directory (CF: ``best.safetensors``; LM: ``final/``).

    ``data_dir``: the datasets folder a CF run needs (its split is rebuilt from the data). Without
    it, ``$PREFREC_DATA``, else the folder the run recorded when it trained, else ``./data``.
    ``device``: where an LM is loaded (auto = CUDA when present, else CPU). Errors name this
    function's arguments (``data_dir=``), not the CLI's options."""
    try:
        return open_run(run_dir, data_dir=data_dir, cli=False, device=device)
    except PrefrecError as e:
        raise _pythonic(e) from None


def open_run(run_dir: str | Path, *, data_dir: str | Path | None = None, cli: bool = True,
             device: str = "auto"):
    """:func:`load` for the CLI (``prefrec recommend``): errors name ``--run``/``--data-dir``."""
    run = Path(run_dir)
    if not run.is_dir():
        raise DataError("run directory not found", where=str(run),
                        fix="pass the folder of a finished run, e.g. runs/demo/psl (see `prefrec run`)")
    kind = _run_kind(run)
    if kind == "cf":
        return CFRecommender(run, data_dir=data_dir, cli=cli)
    if kind == "lm":
        return LMRecommender(run, cli=cli, device=device)
    raise DataError("the folder holds no trained model (no best.safetensors + config.yaml, no final/)",
                    where=str(run), fix="pass the folder of a finished CF run or LM stage (sft/sdpo); "
                                        "an interrupted run can be finished with its --resume option")


_PY_NAMES = {"--users 1 2 3": 'users=["1", "2", "3"]',
             '--history "Heat (1995)" "Alien (1979)"': 'history=["Heat (1995)", "Alien (1979)"]',
             "--data-dir": "data_dir=", "--users": "users", "--k": "k", "--history": "history=",
             "--candidates": "candidates=", "--mask": "mask="}


def _pythonic(e: PrefrecError) -> PrefrecError:
    """The same error, worded for a Python caller: ``data_dir=`` instead of ``--data-dir`` etc."""
    import re

    def fix(text: str | None) -> str | None:
        if not text:
            return text
        text = re.sub(r"(point|pass) --data-dir( \(or set \$PREFREC_DATA\))?( at| to)?",
                      "pass data_dir=<folder> to prefrec.load (or set PREFREC_DATA) pointing at", text)
        for opt, name in _PY_NAMES.items():
            text = re.sub(re.escape(opt) + r"(?![\w-])", name, text)
        return text

    return type(e)(fix(e.what) or e.what, where=fix(e.where), fix=fix(e.fix))


def _speaks_python(method):
    """Errors of a recommender method raised to a Python caller name arguments, not CLI options."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except PrefrecError as e:
            if getattr(self, "_cli", False):
                raise
            raise _pythonic(e) from None
    return wrapper


def _short(values: Sequence[str], n: int = 5) -> str:
    v = list(values)
    return ", ".join(v[:n]) + (", ..." if len(v) > n else "")


class CFRecommender:
    """Top-k items for known users of a trained CF run (MF/LightGCN)."""

    kind = "cf"

    def __init__(self, run: Path, data_dir: str | Path | None = None, cli: bool = False):
        import torch

        from prefrec.cf.config import CFConfig
        from prefrec.config import load_config
        from prefrec.data.registry import load_dataset
        from prefrec.train.cf import _load_weights, build_model, load_splits

        self.run = run
        self._cli = cli
        self.cfg = load_config(CFConfig, run / "config.yaml")
        data_dir = data_dir or _recorded_data_dir(run)
        self.data_dir = data_dir
        self.splits = load_splits(self.cfg, data_dir)
        ds = load_dataset(self.cfg.data.dataset, data_dir)
        self.user_ids = ds.interactions.user_ids
        self.item_ids = ds.interactions.item_ids
        self.catalog = ds.catalog
        if self.catalog is None and self.cfg.data.dataset in ("movielens-100k",):
            self.catalog = _ml100k_titles_by_orgid(self.item_ids, data_dir)
        model = build_model(self.cfg, self.splits)
        _load_weights(model, run / CF_WEIGHTS)
        model.eval()
        with torch.no_grad():
            self._U, self._I = (t.detach() for t in model.user_item_embeddings())
        self._index = {str(u): i for i, u in enumerate(self.user_ids)} if self.user_ids is not None else None

    def user_index(self, user: str | int) -> int:
        """Internal index of a user id as the dataset writes it (ml-100k: "1".."943")."""
        key = str(user)
        if self._index is None:
            try:
                i = int(key)
            except ValueError:
                i = -1
            if 0 <= i < self._U.shape[0]:
                return i
        elif key in self._index:
            return self._index[key]
        known = list(self._index) if self._index is not None else [str(i) for i in range(self._U.shape[0])]
        close = difflib.get_close_matches(key, known, n=1)
        raise DataError(f"user {key!r} is not in dataset {self.cfg.data.dataset!r} ({len(known)} users: "
                        f"{_short(known)})", where="--users",
                        fix=(f"did you mean {close[0]!r}? " if close else "") + "pass user ids as the dataset writes them")

    @_speaks_python
    def scores(self, users: Sequence[str | int], mask: str = "train"):
        """(len(users), n_items) scores with masked items at -inf."""
        import numpy as np
        import torch

        if mask not in ("train", "seen", "none"):
            raise ConfigError(f"unknown mask {mask!r}", where="mask", fix="use train, seen or none")
        idx = [self.user_index(u) for u in users]
        s = self._U[idx] @ self._I.T
        masks = [self.splits.train] if mask != "none" else []
        if mask == "seen" and self.splits.valid is not None:
            masks.append(self.splits.valid)
        for ui in masks:
            for row, u in enumerate(idx):
                items = ui.items_of(u)
                if len(items):
                    s[row, torch.from_numpy(np.asarray(items))] = -torch.inf
        return s

    @_speaks_python
    def recommend(self, users: Sequence[str | int], k: int = 10, *, mask: str = "train",
                  **unused: Any) -> list[dict[str, Any]]:
        """Rows ``{user, rank, item, title, score}``: the top ``k`` items of every user, best first."""
        import torch

        _reject(unused, "a CF run ranks all items for --users; --history/--candidates are for LM runs")
        if not users:
            raise ConfigError("no users given", where="--users", fix="pass one or more user ids, e.g. --users 1 2 3")
        n_items = self._I.shape[0]
        if not 1 <= k <= n_items:
            raise ConfigError(f"k={k} is outside 1..{n_items}", where="--k", fix=f"use 1 <= k <= {n_items}")
        s = self.scores(users, mask)
        top = torch.topk(s, k, dim=1, sorted=True)
        rows = []
        for r, u in enumerate(users):
            for rank, (it, sc) in enumerate(zip(top.indices[r].tolist(), top.values[r].tolist()), 1):
                if sc == -float("inf"):
                    break  # fewer than k unmasked items
                rows.append({"user": str(u), "rank": rank, "item": self._item_id(it),
                             "title": self.catalog.title(it) if self.catalog is not None else None,
                             "score": round(float(sc), 6)})
        return rows

    def top_k_indices(self, users: Sequence[str | int], k: int, mask: str = "train"):
        """Internal item indices of the top ``k`` (for tests and metrics)."""
        import torch

        return torch.topk(self.scores(users, mask), k, dim=1, sorted=True).indices

    def _item_id(self, i: int) -> str:
        return str(self.item_ids[i]) if self.item_ids is not None else str(i)


def _recorded_data_dir(run: Path) -> str | None:
    """Without a data folder or $PREFREC_DATA: the (resolved) folder the run trained on, recorded
    in ``results.json`` (study stages) or the ``split: data`` row of ``metrics.jsonl`` (train-cf)."""
    import os

    if os.environ.get("PREFREC_DATA"):
        return None
    found: Any = None
    try:
        found = json.loads((run / "results.json").read_text()).get("data_dir")
    except (OSError, json.JSONDecodeError, AttributeError):
        pass
    if not found:
        try:
            with open(run / "metrics.jsonl", encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    if isinstance(row, dict) and row.get("split") == "data":
                        found = row.get("data_dir")
                        break
        except (OSError, json.JSONDecodeError):
            pass
    return found if isinstance(found, str) and Path(found).is_dir() else None


def _ml100k_titles_by_orgid(item_ids, data_dir):
    """IR-Benchmark movielens-100k keeps the ml-100k movie id as orgid: titles from u.item if present."""
    try:
        from prefrec.data.interactions import ItemCatalog
        from prefrec.data.registry import load_dataset

        ml = load_dataset("ml-100k", data_dir)
    except Exception:  # titles are a nicety; no raw ml-100k, no titles
        return None
    titles = [ml.catalog.title(int(i) - 1) if ml.catalog is not None and 0 < int(i) <= len(ml.catalog) else str(i)
              for i in item_ids]
    return ItemCatalog(titles=titles, source="ml-100k/u.item")


def _reject(unused: dict[str, Any], fix: str) -> None:
    extra = [k for k, v in unused.items() if v]
    if extra:
        raise ConfigError(f"option(s) {', '.join(extra)} do not apply to this run", where="recommend", fix=fix)


class LMRecommender:
    """Rank candidate titles after a history with a trained LM stage (SFT or S-DPO)."""

    kind = "lm"

    def __init__(self, run: Path, cli: bool = False, device: str = "auto"):
        from prefrec.models.lm import for_inference, inference_options, load_trained_lm, resolve_device

        self.run = run
        self._cli = cli
        dev = resolve_device(device)
        model, self.tokenizer = load_trained_lm(run, options=inference_options(dev))
        self.model = for_inference(model, dev)
        self.meta = _lm_meta(run)
        from prefrec.lm.runinfo import recorded_style

        self.style = recorded_style(self.meta)  # the prompts the run trained with

    def prompt(self, history: Sequence[str], candidates: Sequence[str]) -> str:
        """The training prompt for this history and candidate list (chat-wrapped if it trained so)."""
        from prefrec.lm import prompts
        from prefrec.lm.samples import LMSample
        from prefrec.lm.styles import chat_wrap

        text = prompts.build_prompt(list(history), list(candidates), **_prompt_options(self.meta)) \
            if self.style is None else prompts.build_prompt(list(history), list(candidates), domain=self.style,
                                                          seed=int(self.meta.get("seed") or 0))
        sample = LMSample(prompt=text, history=list(history), candidates=list(candidates), target_index=0)
        return chat_wrap([sample], self.tokenizer, self.style)[0].prompt

    @_speaks_python
    def recommend(self, users: Sequence[Any] = (), k: int | None = None, *, history: Sequence[str] = (),
                  candidates: Sequence[str] = (), **unused: Any) -> list[dict[str, Any]]:
        """Rows ``{rank, title, score, logp}``, best first; ``score`` is the summed log-prob."""
        from prefrec.lm.scoring import candidate_logps

        _reject({"users": users, **unused}, "an LM run ranks --candidates after a --history (titles)")
        history, candidates = [h for h in history], [c for c in candidates]
        if not history:
            raise ConfigError("no history given", where="--history", fix='pass titles, e.g. --history "Heat (1995)" "Alien (1979)"')
        if len(candidates) < 1:
            raise ConfigError("no candidates given", where="--candidates", fix="pass two or more candidate titles")
        dup = [c for c in dict.fromkeys(candidates) if candidates.count(c) > 1]
        if dup:
            raise ConfigError(f"candidate {dup[0]!r} is listed twice", where="--candidates", fix="list each candidate once")
        lp = candidate_logps(self.model, self.tokenizer, [self.prompt(history, candidates)], [candidates])[0]
        order = sorted(range(len(candidates)), key=lambda i: (-float(lp[i]), i))
        k = len(candidates) if k is None else max(1, min(k, len(candidates)))
        return [{"rank": r, "title": candidates[i], "score": round(float(lp[i]), 6)}
                for r, i in enumerate(order[:k], 1)]


def _lm_meta(run: Path) -> dict[str, Any]:
    from prefrec.models.lm import META_FILE

    for p in (run / "final" / META_FILE, run / META_FILE):
        if p.exists():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return {}
    return {}


def _prompt_options(meta: dict[str, Any]) -> dict[str, Any]:
    """Template options recorded by the trainer (so recommend uses the training prompt)."""
    import inspect

    from prefrec.lm import prompts

    opts = meta.get("prompt") or {}
    params = inspect.signature(prompts.build_prompt).parameters
    return {k: v for k, v in opts.items() if k in params}


def to_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    if not rows:
        return ""
    buf = io.StringIO()
    cols = [c for c in rows[0] if any(r.get(c) is not None for r in rows)]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def to_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1, ensure_ascii=False)
