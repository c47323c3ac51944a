"""The LM table of a study: per-case 95 % intervals and baseline rows on the same cases.

Why: "HR@1 0.05" over a few dozen cases cannot be read without the number of cases, an
interval, and what a trivial recommender gets on *those* cases. Every LM stage of a study is
evaluated on one seeded subsample of the test split; the baselines here are evaluated on exactly
that subsample (matched by user, target and candidate ids, :func:`prefrec.commands.baseline.lm_eval_cases`):

- ``random``: the expected metrics of a uniformly random ranking of each case's candidates,
  computed exactly (HR@K = K/C, ...), so it carries no sampling noise and no interval;
- ``popularity``: candidates ranked by how often they occur in the training cases (ties broken
  by a seeded jitter), with per-case intervals like the LM rows;
- ``sasrec``: a small SASRec trained on the training cases (``prefrec baseline`` defaults; a
  few minutes on a CPU), only when listed in ``lm.evaluate.baselines``.

A ranker answers with its top-ranked candidate, so its generation ``HR@1`` equals its
``rank HR@1`` and its ``ValidRatio`` is 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from prefrec.metrics.intervals import interval, rank_case_values

BASELINES = ("random", "popularity", "sasrec")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _rank_columns(ranks) -> tuple[dict[str, float], dict[str, list[float]]]:
    vals = rank_case_values(ranks, ks=(1, 5, 10))
    flat = {f"rank {k}": float(v.mean()) for k, v in vals.items()}
    ci = {f"rank {k}": list(interval(v)) for k, v in vals.items()}
    return flat, ci


def eval_intervals(eval_dir: Path) -> dict[str, list[float]]:
    """95 % intervals of the LM table's columns from ``evaluate_lm``'s per-case files."""
    ci: dict[str, list[float]] = {}
    gen = _read_jsonl(eval_dir / "predictions_generate.jsonl")
    if gen:
        ci["HR@1"] = list(interval([float(bool(r["hit"])) for r in gen]))
        ci["ValidRatio"] = list(interval([float(bool(r["valid"])) for r in gen]))
    rank = _read_jsonl(eval_dir / "predictions_rank.jsonl")
    if rank:
        ci.update(_rank_columns([r["rank"] for r in rank])[1])
    return ci


def baseline_cases(dataset: str, split: str, limit: int | None, seed: int, data_dir: str | None):
    """(the study's evaluation cases as sequence cases, the training cases, n_items)."""
    from prefrec.commands.baseline import lm_eval_cases, load_cases

    splits, n_items = load_cases(dataset, seed, data_dir)
    cases = lm_eval_cases(splits[split], dataset, split, limit, seed, data_dir)
    return cases, splits["train"], n_items


def random_expected(n_candidates: list[int]) -> dict[str, float]:
    """Exact expected metrics of a uniformly random ranking (target rank uniform on 1..C)."""
    c = np.asarray(n_candidates, dtype=np.float64)
    out: dict[str, float] = {}
    for k in (1, 5, 10):
        out[f"rank HR@{k}"] = float(np.mean(np.minimum(k, c) / c))
        out[f"rank NDCG@{k}"] = float(np.mean([sum(1 / np.log2(r + 1) for r in range(1, int(min(k, ci)) + 1)) / ci
                                               for ci in c]))
    out["rank MRR"] = float(np.mean([sum(1 / r for r in range(1, int(ci) + 1)) / ci for ci in c]))
    return out


def run_baseline(model: str, dataset: str, split: str, limit: int | None, seed: int, data_dir: str | None,
                 run_dir: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """(flat metrics in the LM table's columns, their 95 % intervals) of one baseline."""
    from prefrec.metrics.candidates import target_ranks
    from prefrec.train.sequential import PopularityRanker, _targets_pos, item_counts

    cases, train, n_items = baseline_cases(dataset, split, limit, seed, data_dir)
    ci: dict[str, list[float]] = {}
    if model == "random":
        flat = random_expected([len(c.candidates) for c in cases])
    elif model == "popularity":
        scores = PopularityRanker(item_counts(train, n_items), seed).score_candidates(cases)
        ranks = target_ranks(np.asarray(scores), _targets_pos(cases))
        flat, ci = _rank_columns(ranks)
    elif model == "sasrec":
        from prefrec.commands.baseline import BaselineConfig
        from prefrec.commands.baseline import run_baseline as run_sasrec

        res = run_sasrec(BaselineConfig(model="sasrec", dataset=dataset, seed=seed, eval_split=split,
                                        eval_limit=limit, run_dir=str(run_dir)), data_dir=data_dir)
        flat = {f"rank {k}": float(v) for k, v in res["metrics"].items()
                if k in ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")}
    else:  # validated when the study loads
        raise ValueError(model)
    flat = {"n_cases": len(cases), "HR@1": flat["rank HR@1"], "ValidRatio": 1.0, **flat}
    if "rank HR@1" in ci:
        ci["HR@1"] = ci["rank HR@1"]
    return flat, ci
