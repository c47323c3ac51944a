"""``prefrec train-cf``: train one embedding recommender (MF / LightGCN / XSimGCL) with one ranking loss."""

from __future__ import annotations

import argparse

from prefrec.cli import add_common, add_overwrite

HELP = """\
Train MF, LightGCN or XSimGCL (model.name) with BPR / SL / BSL / PSL / AdvInfoNCE / LLPAUC
on a dataset and write runs/<name>/:
config.yaml, metrics.jsonl, checkpoints/, best.safetensors, report.md.

Temperature units: for psl, loss.tau is the PSL paper's tau (scores are cos/2); for sl and bsl,
loss.tau / loss.tau1 / loss.tau2 are IR-Benchmark code units on raw cosine (= 2 x paper tau).

examples:
  prefrec train-cf --config configs/ml100k_mf_psl.yaml
  prefrec train-cf --config configs/ml100k_mf_psl.yaml loss.activation=relu train.epochs=20
  prefrec train-cf --config configs/gowalla_mf_psl.yaml train.negative_mode=shared --resume
  prefrec train-cf --config configs/ml100k_lightgcn_psl.yaml model.name=xsimgcl model.cl_weight=0.2
"""


def register(sub) -> None:
    p = sub.add_parser("train-cf", help="train MF/LightGCN/XSimGCL with a ranking loss (BPR, SL, BSL, PSL, ...)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    add_overwrite(p)
    p.add_argument("--resume", action="store_true", help="continue from runs/<name>/checkpoints if present (the stored config must match, "
                   "except keys documented safe to change, e.g. train.epochs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefrec.rundir import child, overwrite_if_asked
    from prefrec.cf.config import CFConfig
    from prefrec.config import load_config
    from prefrec.train.cf import train_cf

    cfg = load_config(CFConfig, args.config, args.overrides)
    overwrite_if_asked(args, child(cfg.output_dir, cfg.name, "name"))
    result = train_cf(cfg, data_dir=args.data_dir, resume=args.resume)
    print(format_table({cfg.name: result}, cfg.train.ks))
    print(f"\nrun directory: {result['run_dir']}")
    return 0


def format_table(results: dict[str, dict], ks) -> str:
    """Markdown table: one row per run, test Recall/NDCG at every K plus best epoch and time."""
    cols = [f"{m}@{k}" for k in ks for m in ("Recall", "NDCG")]
    lines = ["| run | " + " | ".join(cols) + " | best epoch | train s |",
             "|---" * (len(cols) + 3) + "|"]
    for name, r in results.items():
        t = r["test"]
        lines.append(f"| {name} | " + " | ".join(f"{t[c]:.4f}" for c in cols)
                     + f" | {r['best_epoch']} | {r['train_seconds']} |")
    return "\n".join(lines)
