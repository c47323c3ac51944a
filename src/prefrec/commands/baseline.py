"""``prefrec baseline``: random / popularity / SASRec on the LM recommender's own test cases.

Same cases as the LM side (:mod:`prefrec.data.sequences`), same candidate metrics
(:mod:`prefrec.metrics.candidates`) plus popularity-bias metrics
(:mod:`prefrec.metrics.popularity`), so the table rows are directly comparable.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Literal, Optional

from prefrec.config import Config

log = logging.getLogger(__name__)

MODELS = ("random", "popularity", "sasrec")
DATASETS = {"ml-100k": "ml-100k", "movielens": "ml-100k", "llara-lastfm": "llara-lastfm",
            "lastfm": "llara-lastfm"}


class SASRecSection(Config):
    """SASRec architecture (Kang & McAuley 2018, small)."""

    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 10
    dropout: float = 0.2


class LossSection(Config):
    """Shared ranking loss (``prefrec.losses``); ``tau`` default per loss (SL 0.1 on cosines, PSL 0.05 on cos/2)."""

    name: Literal["bpr", "sl", "sl_paper", "psl", "bsl"] = "bpr"
    tau: Optional[float] = None
    activation: Literal["tanh", "atan", "relu", "exp"] = "tanh"


class TrainSection(Config):
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    num_negatives: int = 64
    positions: Literal["last", "all"] = "last"
    patience: int = 4
    select_metric: str = "NDCG@10"
    max_minutes: Optional[float] = 8.0
    threads: int = 1


class BaselineConfig(Config):
    """``prefrec baseline`` configuration (YAML + dotted overrides)."""

    dataset: str = "ml-100k"
    model: Literal["random", "popularity", "sasrec"] = "sasrec"
    seed: int = 0
    eval_split: Literal["val", "test"] = "test"
    # evaluate on the cases `prefrec evaluate-lm --limit N --seed <seed>` uses (a seeded subsample;
    # cases whose candidates share a title are dropped as there); None = every case of the split
    eval_limit: Optional[int] = None
    run_dir: Optional[str] = None
    sasrec: SASRecSection = SASRecSection()
    loss: LossSection = LossSection()
    train: TrainSection = TrainSection()


def register(sub) -> None:
    from prefrec.cli import add_common

    p = sub.add_parser(
        "baseline", help="random / popularity / SASRec on the LM test cases (HR@K, NDCG@K, popularity bias)",
        description="Classic sequential baselines evaluated on exactly the cases the LM recommender "
                    "uses (20 candidates per case). SASRec trains on the training split only, with a "
                    "shared ranking loss, and keeps the best epoch by validation NDCG@10.",
        epilog="examples:\n  prefrec baseline --dataset ml-100k --model popularity\n"
               "  prefrec baseline --dataset llara-lastfm --model sasrec --loss psl train.epochs=10\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="ml-100k (LLaRA-style user split), llara-lastfm (S-DPO cases), an S-DPO "
                                     "JSON file/folder or an interaction log (data card, table?user=..&item=..)")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--loss", choices=("bpr", "sl", "sl_paper", "psl", "bsl"), help="SASRec training loss")
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--limit", type=int, metavar="N",
                   help="evaluate on the same N cases as `prefrec evaluate-lm --limit N` (same --seed)")
    p.add_argument("--run-dir", metavar="DIR", help="output folder (default runs/baseline-<dataset>-<model>[-<loss>]-s<seed>)")
    p.add_argument("--overwrite", action="store_true",
                   help="move a previous SASRec run in the folder aside (<folder>.old-<time>) instead of refusing")
    add_common(p)
    p.set_defaults(func=run)


def load_cases(dataset: str, seed: int = 0, data_dir: str | None = None):
    """``({"train","val","test"}: cases, n_items)`` for any LM case source (:mod:`prefrec.lm.sources`:
    ml-100k, llara-*, S-DPO JSON, logs): the LM side's cases. Without a training split (a lone
    S-DPO test file) the training cases are the next-item windows inside the histories."""
    from prefrec.lm.sources import case_source, training_cases

    src = case_source(dataset, data_dir, seed)
    splits = {s: src.cases(s) if s in src.splits or src.any_split is not None else [] for s in ("val", "test")}
    splits["train"] = training_cases(src)
    return splits, src.n_items


def lm_eval_cases(cases, dataset: str, split: str, limit: int | None, seed: int = 0, data_dir=None):
    """The subset of ``cases`` that ``prefrec evaluate-lm --limit limit --seed seed`` evaluates,
    in order: cases are matched to its prompted samples by (user, target, candidate ids)."""
    from prefrec.errors import DataError
    from prefrec.lm.prompts import lm_samples

    samples = lm_samples(dataset, split, data_dir=data_dir, limit=limit, seed=seed)
    keys = {(int(s.user), int(s.item_ids[s.target_index]), tuple(int(i) for i in s.item_ids)) for s in samples}
    out = [c for c in cases if (int(c.user), int(c.target), tuple(int(i) for i in c.candidates)) in keys]
    if len(out) != len(samples):
        raise DataError(f"matched {len(out)} cases to {len(samples)} LM samples", where="baseline eval_limit",
                        fix="use the same dataset, split and seed as evaluate-lm")
    return out


def run(args: argparse.Namespace) -> int:
    from prefrec.config import dump_config, load_config

    overrides = list(args.overrides or [])
    for opt, key in (("dataset", "dataset"), ("model", "model"), ("loss", "loss.name"), ("seed", "seed"),
                     ("epochs", "train.epochs"), ("limit", "eval_limit"), ("run_dir", "run_dir")):
        v = getattr(args, opt, None)
        if v is not None:
            overrides.append(f"{key}={v}")
    cfg = load_config(BaselineConfig, args.config, overrides)
    if getattr(args, "overwrite", False):
        from prefrec.rundir import move_aside

        move_aside(baseline_dir(cfg))
    res = run_baseline(cfg, data_dir=getattr(args, "data_dir", None))
    out = Path(res["run_dir"])
    dump_config(cfg, out / "config.yaml")
    keys = ["HR@1", "HR@5", "NDCG@5", "NDCG@10", "ValidRatio", "HeadShare@1", "AvgPop@1", "AvgPop/target",
            "HR@1/head", "HR@1/mid", "HR@1/tail"]
    print(f"{res['label']} on {cfg.dataset} {cfg.eval_split} ({res['metrics']['n']} cases, "
          f"{res['wall_seconds']:.1f} s):")
    for k in keys:
        print(f"  {k:14s} {res['metrics'][k]:.4f}")
    print(f"results: {out / 'results.json'}")
    return 0


def baseline_dir(cfg: BaselineConfig) -> Path:
    """``run_dir``, else ``runs/baseline-<dataset>-<model>[-<loss>]-s<seed>[-n<limit>]``."""
    from prefrec.rundir import child

    from prefrec.lm.sources import source_label

    name = f"baseline-{DATASETS.get(cfg.dataset) or source_label(cfg.dataset)}-{cfg.model}" \
        + (f"-{cfg.loss.name}" if cfg.model == "sasrec" else "") \
        + f"-s{cfg.seed}" + (f"-n{cfg.eval_limit}" if cfg.eval_limit is not None else "")
    return Path(cfg.run_dir) if cfg.run_dir else child("runs", name, "dataset")


def run_baseline(cfg: BaselineConfig, data_dir: str | None = None) -> dict:
    """Run one baseline end to end; writes ``results.json`` (+ ``metrics.jsonl``/checkpoints for SASRec).

    The folder is held by this process for the run (:mod:`prefrec.rundir`). SASRec refuses a
    folder holding another run (``--overwrite`` moves it aside); random/popularity results are
    deterministic and simply rewritten."""
    from prefrec.rundir import check_start, claim

    out = baseline_dir(cfg)
    with claim(out, key="run_dir"):
        if cfg.model == "sasrec":
            check_start(out, cfg.model_dump(mode="json"), resume=False, kind="sasrec")
        return _run_baseline(cfg, out, data_dir)


def _run_baseline(cfg: BaselineConfig, out: Path, data_dir: str | None) -> dict:
    import torch

    from prefrec.train.sequential import (PopularityRanker, RandomRanker, SequentialTrainConfig, evaluate_ranker,
                                          item_counts, split_fingerprint, train_sasrec)

    torch.set_num_threads(cfg.train.threads)
    t0 = time.perf_counter()
    splits, n_items = load_cases(cfg.dataset, cfg.seed, data_dir)
    t_data = time.perf_counter() - t0
    train, val, test = splits["train"], splits["val"], splits["test"]
    counts = item_counts(train, n_items)
    label = cfg.model if cfg.model != "sasrec" else f"SASRec-{cfg.loss.name.upper()}"
    info: dict = {}
    t1 = time.perf_counter()
    if cfg.model == "random":
        ranker = RandomRanker(cfg.seed)
    elif cfg.model == "popularity":
        ranker = PopularityRanker(counts, cfg.seed)
    else:
        hyper = {"activation": cfg.loss.activation} if cfg.loss.name == "psl" else {}
        if cfg.loss.tau is not None:
            hyper["tau"] = cfg.loss.tau
        tcfg = SequentialTrainConfig(
            epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, learning_rate=cfg.train.learning_rate,
            weight_decay=cfg.train.weight_decay, num_negatives=cfg.train.num_negatives,
            positions=cfg.train.positions, patience=cfg.train.patience, select_metric=cfg.train.select_metric,
            seed=cfg.seed, max_minutes=cfg.train.max_minutes, loss_hyper=hyper)
        (out / "metrics.jsonl").write_text("")

        def on_epoch(row: dict) -> None:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

        ranker, info = train_sasrec(train, val, n_items, loss=cfg.loss.name,
                                    model_kwargs=cfg.sasrec.model_dump(), cfg=tcfg,
                                    out_dir=out / "checkpoints", on_epoch=on_epoch)
    t_fit = time.perf_counter() - t1
    eval_cases = test if cfg.eval_split == "test" else val
    if not eval_cases:
        from prefrec.errors import DataError

        raise DataError(f"dataset {cfg.dataset!r} has no {cfg.eval_split} cases", where="eval_split",
                        fix="give the split's file (e.g. <name>-test.json beside the others) or use another eval_split")
    if cfg.eval_limit is not None:
        eval_cases = lm_eval_cases(eval_cases, cfg.dataset, cfg.eval_split, cfg.eval_limit, cfg.seed, data_dir)
    metrics = evaluate_ranker(ranker, eval_cases, counts=counts)
    res = {
        "label": label, "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed, "split": cfg.eval_split,
        "eval_limit": cfg.eval_limit, "metrics": metrics, "run_dir": str(out),
        "n_cases": {k: len(v) for k, v in splits.items()}, "n_items": n_items,
        "train_split": split_fingerprint(train),
        "wall_seconds": time.perf_counter() - t0, "data_seconds": t_data, "fit_seconds": t_fit,
        "best": info.get("best"), "epochs_run": len(info.get("history", [])),
    }
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    return res
