"""Summary of seed-repeated CF runs: per-seed test metrics, mean ± std, and a paired comparison.

Not a benchmark: a reader of finished run directories (``metrics.jsonl`` as written by
``prefrec.train.cf``). Runs are found as ``<root>-s<seed>/<name>-<label>/metrics.jsonl`` (the
layout of ``prefrec compare ... output_dir=<root>-s<seed> seed=<seed>``). For each label it
prints the test metric per seed, the best epoch (chosen on validation), epochs run and
training seconds; then mean ± sample std over seeds and, for every label against ``--base``,
the paired differences (same seed = same validation holdout and same initial draw), their
mean, a paired t-test (scipy ``ttest_rel``, two-sided) and how many seeds favour each side.
Seeds missing a run are left out of that pair and reported.

    python bench/cf_seed_table.py --root runs/cf17-health --name health_mf_psl \\
        --labels sl psl-relu bpr --seeds 2024 2025 2026 --base sl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def read_run(path: Path) -> dict | None:
    """Test record + best epoch + epochs run + training seconds, or None if the run is unfinished."""
    if not path.exists():
        return None
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    test = [r for r in recs if r.get("split") == "test"]
    if not test:
        return None
    train = [r for r in recs if r.get("split") == "train"]
    return {"test": test[-1], "best_epoch": test[-1]["epoch"], "epochs": max((r["epoch"] for r in train), default=0),
            "train_s": sum(r.get("seconds", 0.0) for r in train)}


def fmt_ms(xs: list[float]) -> str:
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--labels", nargs="+", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, required=True)
    ap.add_argument("--base", default=None, help="label the others are compared against (paired by seed)")
    ap.add_argument("--metrics", nargs="+", default=["NDCG@20", "Recall@20"])
    args = ap.parse_args(argv)

    runs = {(lab, s): read_run(Path(f"{args.root}-s{s}") / f"{args.name}-{lab}" / "metrics.jsonl")
            for lab in args.labels for s in args.seeds}
    print("| loss | seed | best epoch | epochs run | train s | " + " | ".join(f"test {m}" for m in args.metrics) + " |")
    print("|---" * (5 + len(args.metrics)) + "|")
    for lab in args.labels:
        for s in args.seeds:
            r = runs[(lab, s)]
            if r is None:
                print(f"| {lab} | {s} | not finished | | | " + " | ".join("" for _ in args.metrics) + " |")
                continue
            print(f"| {lab} | {s} | {r['best_epoch']} | {r['epochs']} | {r['train_s']:.0f} | "
                  + " | ".join(f"{r['test'][m]:.4f}" for m in args.metrics) + " |")
    print("\n| loss | seeds | " + " | ".join(f"{m} mean ± std" for m in args.metrics) + " |")
    print("|---" * (2 + len(args.metrics)) + "|")
    for lab in args.labels:
        done = [s for s in args.seeds if runs[(lab, s)] is not None]
        print(f"| {lab} | {len(done)} | "
              + " | ".join(fmt_ms([runs[(lab, s)]['test'][m] for s in done]) for m in args.metrics) + " |")
    if args.base:
        from scipy import stats

        print(f"\nPaired by seed against {args.base} (difference = other - {args.base}):")
        for lab in args.labels:
            if lab == args.base:
                continue
            both = [s for s in args.seeds if runs[(lab, s)] is not None and runs[(args.base, s)] is not None]
            missing = sorted(set(args.seeds) - set(both))
            for m in args.metrics:
                d = [runs[(lab, s)]["test"][m] - runs[(args.base, s)]["test"][m] for s in both]
                if len(d) < 2:
                    print(f"- {lab} {m}: {len(d)} paired seed(s), no test" + (f" (missing {missing})" if missing else ""))
                    continue
                t = stats.ttest_rel([runs[(lab, s)]["test"][m] for s in both], [runs[(args.base, s)]["test"][m] for s in both])
                rel = statistics.mean(d) / statistics.mean(runs[(args.base, s)]["test"][m] for s in both)
                print(f"- {lab} {m}: mean diff {statistics.mean(d):+.4f} ({rel:+.1%}), per seed "
                      + ", ".join(f"{x:+.4f}" for x in d)
                      + f"; {sum(x > 0 for x in d)}/{len(d)} seeds favour {lab}; paired t = {t.statistic:.2f}, "
                      f"p = {t.pvalue:.3f} (n = {len(d)})" + (f"; missing seeds {missing}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
