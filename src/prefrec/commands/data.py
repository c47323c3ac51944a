"""``prefrec data stats <dataset>``: what is in a dataset."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets (stats)",
                       description="Inspect datasets known to prefrec.")
    dsub = p.add_subparsers(dest="data_command", metavar="<action>", required=True)
    s = dsub.add_parser("stats", help="users, items, interactions, density, history lengths, ranges",
                        description="Print dataset statistics. DATASET is a registered name "
                                    "(see `prefrec data list`) or a path to a file/folder.")
    s.add_argument("dataset")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $PREFREC_DATA or ./data)")
    s.set_defaults(func=run_stats)
    ls = dsub.add_parser("list", help="the registered dataset names")
    ls.add_argument("--data-dir", metavar="DIR")
    ls.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    from prefrec.data.registry import DATASETS

    for name, spec in DATASETS.items():
        print(f"{name:38s} {spec.description}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from prefrec.data.registry import load_dataset

    ds = load_dataset(args.dataset, data_dir=args.data_dir)
    st = ds.stats()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    for k, v in st.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, int):
            v = f"{v:,}"
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b:.4g}" if isinstance(b, float) else f"{a}={b:,}" for a, b in v.items())
        elif isinstance(v, list):
            v = " .. ".join(f"{x:.6g}" for x in v)
        print(f"{k:16s} {v}")
    return 0
