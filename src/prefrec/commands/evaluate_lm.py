"""``prefrec evaluate-lm``: HR@1/ValidRatio by generation and HR@K/NDCG@K by candidate ranking.

Heavy imports (torch models, transformers) happen inside :func:`run` only.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path


def register(sub) -> None:
    from prefrec.cli import add_common

    p = sub.add_parser(
        "evaluate-lm", help="evaluate an LM recommender (generation HR@1/ValidRatio, ranking HR@K/NDCG@K)",
        description="Evaluate an LM recommender on prompt cases of a dataset split. 'generate' decodes "
                    "greedily (<= 20 new tokens) and applies the S-DPO rule (valid iff exactly one "
                    "candidate title appears; HR@1 = hits/all). 'rank' scores every candidate by the "
                    "summed log-prob of its title given the prompt (prompt encoded once) and reports "
                    "HR@1, HR@5, NDCG@5, NDCG@10, MRR. Writes metrics.json and per-case JSONL to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="smollm2-135m", metavar="RUN_DIR_OR_MODEL",
                   help="a run directory of `prefrec sft`/`sdpo` (or its final/ folder), a saved model "
                        "folder, or a model name (smollm2-135m = the untuned built-in model)")
    p.add_argument("--dataset", default="ml-100k", help="dataset name, e.g. ml-100k, lastfm")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--mode", default="both", choices=["generate", "rank", "both"])
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N cases only")
    p.add_argument("--seed", type=int, default=0, help="seed of candidate sampling / prompt templates")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/eval-<dataset>-<split> "
                                                "for a run directory, else runs/eval-<model>-<dataset>-<split>)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--gen-batch-size", type=int, default=8)
    p.add_argument("--rank-batch-size", type=int, default=4)
    p.add_argument("--rule", default="paper", choices=["paper", "longest"],
                   help="title matching rule for generated answers (see prefrec.metrics.generation)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_common(p, config=False)
    p.set_defaults(func=run)


def _is_trained(path: Path) -> bool:
    from prefrec.models.lm import META_FILE

    return (path / META_FILE).exists() or (path / "final" / META_FILE).exists()


def load_model(checkpoint: str):
    """``(model, tokenizer, kind)``: a trained run/folder via ``load_trained_lm``, else ``load_lm``."""
    from prefrec.models.lm import load_lm, load_trained_lm

    p = Path(checkpoint)
    if p.is_dir() and _is_trained(p):
        model, tok = load_trained_lm(p)
        return model, tok, "trained"
    model, tok = load_lm(checkpoint)
    return model, tok, "base"


def default_out(checkpoint: str, dataset: str, split: str, trained: bool) -> Path:
    if trained:
        return Path(checkpoint) / f"eval-{dataset}-{split}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(checkpoint).name or checkpoint)
    return Path("runs") / f"eval-{name}-{dataset}-{split}"


def run(args: argparse.Namespace) -> int:
    import torch

    from prefrec.lm.evaluate import evaluate_lm
    from prefrec.lm.prompts import lm_samples

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    samples = lm_samples(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit, seed=args.seed)
    model, tok, kind = load_model(args.checkpoint)
    load_s = time.perf_counter() - t0
    out = Path(args.out) if args.out else default_out(args.checkpoint, args.dataset, args.split, kind == "trained")
    res = evaluate_lm(model, tok, samples, mode=args.mode, out_dir=out, max_new_tokens=args.max_new_tokens,
                      gen_batch_size=args.gen_batch_size, rank_batch_size=args.rank_batch_size, rule=args.rule,
                      meta={"checkpoint": args.checkpoint, "kind": kind, "dataset": args.dataset,
                            "split": args.split, "limit": args.limit, "seed": args.seed,
                            "load_seconds": round(load_s, 2), "threads": torch.get_num_threads()})
    for mode in ("generate", "rank"):
        if mode in res:
            m = res[mode]
            keys = ["HR@1", "ValidRatio"] if mode == "generate" else ["HR@1", "HR@5", "NDCG@5", "NDCG@10", "MRR"]
            figs = "  ".join(f"{k}={m[k]:.4f}" for k in keys)
            print(f"{mode:8s} {figs}  n={m['n']}  {m['seconds']:.1f}s ({m['seconds_per_case']:.3f} s/case)")
    print(f"wrote {out / 'metrics.json'}")
    return 0
