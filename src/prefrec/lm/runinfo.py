"""What an LM run records about its data and prompts, and how later commands read it back.

Trainers add :func:`run_record` to ``final/prefrec_lm.json``: the dataset string, the data
folder, the seed and the prompt style (templates verbatim, so a run stays self-contained when
the built-in wording or the template file changes later). ``evaluate-lm``, ``recommend`` and
``prefrec.load`` default to these, so a run is evaluated and served with the prompts it
learned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_record(cfg) -> dict[str, Any]:
    """``{"dataset", "data_dir", "seed", "prompt"}`` of an LM training config."""
    from prefrec.lm.prompts import style_for

    style = style_for(cfg.dataset, getattr(cfg, "prompt", None))
    return {"dataset": absolute_dataset(cfg.dataset), "data_dir": cfg.data_dir, "seed": cfg.seed,
            "prompt": style.to_meta()}


def absolute_dataset(dataset: str) -> str:
    """A dataset path made absolute (options after ``?`` kept), so later commands find it from
    any folder; names are returned as they are."""
    base, q, opts = str(dataset).partition("?")
    p = Path(base).expanduser()
    if not p.exists() or p.is_absolute():
        return dataset
    return str(p.resolve()) + q + opts


def read_meta(path: str | Path) -> dict[str, Any]:
    """``prefrec_lm.json`` of a run folder (``<run>/final``) or a saved model folder; ``{}`` if none."""
    from prefrec.models.lm import META_FILE

    p = Path(path)
    for f in (p / "final" / META_FILE, p / META_FILE):
        if f.is_file():
            try:
                meta = json.loads(f.read_text())
            except json.JSONDecodeError:
                return {}
            return meta if isinstance(meta, dict) else {}
    return {}


def recorded_style(meta: dict[str, Any]):
    """The run's :class:`~prefrec.lm.styles.PromptStyle`; for older runs, the dataset's domain."""
    from prefrec.lm.prompts import style_for
    from prefrec.lm.styles import PromptStyle

    style = PromptStyle.from_meta(meta.get("prompt"))
    if style is None and meta.get("dataset"):
        style = style_for(str(meta["dataset"]))
    return style


def eval_inputs(checkpoint: str, dataset: str | None, seed: int | None, prompt) -> tuple[str, int, Any]:
    """``(dataset, seed, style)`` for evaluating ``checkpoint``: explicit values win, then what the
    run recorded, then ``ml-100k`` / seed 0 / the dataset's domain."""
    from prefrec.lm.prompts import style_for

    meta = read_meta(checkpoint) if Path(checkpoint).is_dir() else {}
    ds = dataset or meta.get("dataset") or "ml-100k"
    sd = seed if seed is not None else int(meta.get("seed", 0) or 0)
    if prompt is not None:
        return ds, sd, style_for(ds, prompt)
    style = recorded_style(meta) if meta else None  # the run's own prompts, whatever the dataset
    return ds, sd, style or style_for(ds)
