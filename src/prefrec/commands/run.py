"""``prefrec run experiment.yaml``: a whole study (CF grid and/or SFT -> S-DPO) + report.md.

Thin layer over :mod:`prefrec.experiment`; finished stages (same config hash) are skipped, so
running the same file twice only rewrites the report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a study file end to end (CF runs, LM stages, report.md)",
        description="Run every stage of a study file that is not already done, then write "
                    "<output_dir>/<name>/report.md. Stages are keyed by the hash of their resolved "
                    "config: unchanged stages are skipped, changed ones re-run (the old output is "
                    "kept as <label>@<old key>), interrupted ones resume from their last checkpoint.",
        epilog="example: prefrec run configs/demo.yaml cf.base.train.epochs=5 --only psl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="the study file (e.g. configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="overrides of the study file, dotted (e.g. cf.base.train.epochs=5 name=try2)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $PREFREC_DATA or ./data)")
    p.add_argument("--force", action="store_true",
                   help="re-run stages even when their output exists (the old stage folder is kept as <label>.old-<time>)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages (by label)")
    p.add_argument("--dry-run", action="store_true", help="print the stages, their keys and status; run nothing")
    p.add_argument("--tensorboard", action="store_true", help="also export TensorBoard scalars (needs tensorboard)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefrec.experiment import check_only, load_experiment, plan, run_experiment, table_of

    overrides = list(args.overrides)
    if args.tensorboard:
        overrides.append("report.tensorboard=true")
    exp = load_experiment(args.experiment, overrides, data_dir=args.data_dir)
    if args.dry_run:
        stages = plan(exp)
        check_only(stages, args.only)
        for s in stages:
            status = "done" if s.done() else "to run"
            if args.only and s.label not in args.only:
                status = "skipped (--only)" if status == "to run" else status
            print(f"{s.kind:12s} {s.label:20s} key {s.key}  {status:7s} {s.run_dir}")
        return 0
    text = Path(args.experiment).read_text(encoding="utf-8")
    if overrides:
        text += "\n# command-line overrides:\n" + "".join(f"#   {o}\n" for o in overrides)
    res = run_experiment(exp, force=args.force, only=args.only, study_text=text)
    print(table_of(res.report))
    print(f"\nreport: {res.report}  ({len(res.ran)} stages ran, {len(res.skipped)} skipped, "
          f"{res.wall_time:.1f} s)")
    sys.stdout.flush()
    return 0
