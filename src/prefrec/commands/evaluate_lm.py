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
    p.add_argument("--dataset", default=None,
                   help="ml-100k, llara-lastfm, llara-movielens, an S-DPO JSON file/folder or an interaction log "
                        "(data card, table?user=..&item=..); default: the run's own dataset, else ml-100k")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="dataset split (LM datasets name the validation split 'val')")
    p.add_argument("--mode", default="both", choices=["generate", "rank", "both"])
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="evaluate a seeded random subset of N cases (chosen by --seed, kept in the split's "
                        "order; the same cases as `prefrec baseline --limit N`)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the split, candidates and prompt templates (default: the run's seed, else 0)")
    p.add_argument("--domain", help="prompt domain (movie, music, book, product, item); default: the run's "
                                    "recorded prompts, else the dataset's domain")
    p.add_argument("--template", metavar="FILE", help="prompt template file (overrides the run's prompts)")
    p.add_argument("--chat-template", action="store_true", help="wrap prompts in the tokenizer's chat template")
    p.add_argument("--out", metavar="DIR", help="output folder (default: <run>/eval-<dataset>-<split> "
                                                "for a run directory, else runs/eval-<model>-<dataset>-<split>)")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--gen-batch-size", type=int, default=8)
    p.add_argument("--rank-batch-size", type=int, default=4)
    p.add_argument("--rule", default="paper", choices=["paper", "longest"],
                   help="title matching rule for generated answers (see prefrec.metrics.generation)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a CPU shared with other jobs use 1: "
                        "oversubscribed threads made SmolLM2 forwards ~6x slower in our measurements")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default=None, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weight dtype (default: float32 on CPU, bfloat16 on GPUs that support it)")
    p.add_argument("--log-every", type=int, default=0, metavar="N",
                   help="log progress (cases done, ETA) every N cases (default 0: after the first batch, "
                        "then every minute; a progress bar too on a terminal)")
    p.add_argument("--no-popularity", action="store_true",
                   help="skip the popularity-bias metrics (they need the dataset's training split)")
    add_common(p, config=False)
    p.set_defaults(func=run)


def _is_trained(path: Path) -> bool:
    from prefrec.models.lm import META_FILE

    return (path / META_FILE).exists() or (path / "final" / META_FILE).exists()


def load_model(checkpoint: str, device: str = "cpu", dtype: str | None = None):
    """``(model, tokenizer, kind)`` on ``device``: a trained run/folder via ``load_trained_lm``,
    else ``load_lm``."""
    from prefrec.models.lm import for_inference, inference_options, load_lm, load_trained_lm, resolve_device

    dev = resolve_device(device)
    opts = inference_options(dev, dtype)
    p = Path(checkpoint)
    if p.is_dir() and _is_trained(p):
        model, tok = load_trained_lm(p, options=opts)
        return for_inference(model, dev), tok, "trained"
    model, tok = load_lm(checkpoint, options=opts)
    return for_inference(model, dev), tok, "base"


def default_out(checkpoint: str, dataset: str, split: str, trained: bool) -> Path:
    if trained:
        return Path(checkpoint) / f"eval-{dataset}-{split}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(checkpoint).name or checkpoint)
    return Path("runs") / f"eval-{name}-{dataset}-{split}"


POP_KEYS = ("HeadShare@1", "TailShare@1", "AvgPop@1", "AvgPop/target", "PopLift@1", "TargetHeadShare",
            "Coverage@1", "HR@1/head", "HR@1/mid", "HR@1/tail")


def popularity_metrics(out_dir: Path, samples, dataset: str, seed: int = 0, data_dir=None) -> dict:
    """Popularity-bias metrics of the top-1 recommendation per mode, from the per-case JSONL files
    in ``out_dir`` (:func:`prefrec.metrics.popularity.popularity_report`; invalid generations are
    ``-1``). Training counts come from the same training cases ``prefrec baseline`` uses
    (:func:`prefrec.commands.baseline.load_cases` + ``item_counts``), so the numbers are
    comparable with the baseline rows. Returns ``{mode: report}``; ``{}`` when the samples carry
    no item ids or the dataset has no training cases."""
    import json

    import numpy as np

    from prefrec.commands.baseline import load_cases
    from prefrec.metrics.popularity import popularity_report
    from prefrec.train.sequential import item_counts

    if any(s.item_ids is None for s in samples):
        return {}
    splits, n_items = load_cases(dataset, seed, data_dir)
    counts = item_counts(splits["train"], n_items)
    targets = np.asarray([s.item_ids[s.target_index] for s in samples], dtype=np.int64)
    out: dict = {}
    for mode in ("generate", "rank"):
        f = Path(out_dir) / f"predictions_{mode}.jsonl"
        if not f.exists():
            continue
        recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if len(recs) != len(samples):
            continue
        top1 = [-1 if r["prediction"] is None else samples[i].item_ids[r["prediction"]]
                for i, r in enumerate(recs)]
        out[mode] = popularity_report(np.asarray(top1, dtype=np.int64), targets, counts)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from prefrec.lm.evaluate import evaluate_lm
    from prefrec.lm.prompts import lm_samples
    from prefrec.lm.sources import source_label

    if args.threads:
        torch.set_num_threads(args.threads)
    from prefrec.lm.runinfo import eval_inputs
    from prefrec.lm.styles import chat_wrap

    t0 = time.perf_counter()
    given = ({"domain": args.domain, "template": args.template, "chat_template": args.chat_template}
             if args.domain or args.template or args.chat_template else None)
    args.dataset, args.seed, style = eval_inputs(args.checkpoint, args.dataset, args.seed, given)
    samples = lm_samples(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit, seed=args.seed,
                         prompt=style)
    model, tok, kind = load_model(args.checkpoint, args.device, args.dtype)
    samples = chat_wrap(samples, tok, style)
    load_s = time.perf_counter() - t0
    out = Path(args.out) if args.out else default_out(args.checkpoint, source_label(args.dataset), args.split,
                                                      kind == "trained")
    res = evaluate_lm(model, tok, samples, mode=args.mode, out_dir=out, max_new_tokens=args.max_new_tokens,
                      gen_batch_size=args.gen_batch_size, rank_batch_size=args.rank_batch_size, rule=args.rule,
                      meta={"checkpoint": args.checkpoint, "kind": kind, "dataset": args.dataset,
                            "split": args.split, "limit": args.limit, "seed": args.seed, "prompt": style.name,
                            "load_seconds": round(load_s, 2), "threads": torch.get_num_threads()},
                      log_every=args.log_every or None)
    if not args.no_popularity:
        import json

        from prefrec.errors import PrefrecError

        try:
            pop = popularity_metrics(out, samples, args.dataset, args.seed, args.data_dir)
        except (PrefrecError, OSError) as e:  # e.g. no training data available: metrics stay as they are
            print(f"popularity metrics skipped: {e}")
            pop = {}
        if pop:
            for mode, rep in pop.items():
                res[mode]["popularity"] = rep
            from prefrec.safeio import atomic_write_bytes  # unique temp name, never follows a planted symlink

            atomic_write_bytes(out / "metrics.json", json.dumps(res, indent=1).encode("utf-8"))
    for mode in ("generate", "rank"):
        if mode in res:
            m = res[mode]
            keys = ["HR@1", "ValidRatio"] if mode == "generate" else ["HR@1", "HR@5", "NDCG@5", "NDCG@10", "MRR"]
            figs = "  ".join(f"{k}={m[k]:.4f}" for k in keys)
            print(f"{mode:8s} {figs}  n={m['n']}  {m['seconds']:.1f}s ({m['seconds_per_case']:.3f} s/case)")
            if "popularity" in m:
                pm = m["popularity"]
                print(" " * 9 + "  ".join(f"{k}={pm[k]:.4f}" for k in POP_KEYS[:6]))
    print(f"wrote {out / 'metrics.json'}")
    return 0
