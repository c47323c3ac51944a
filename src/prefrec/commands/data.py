"""``prefrec data stats|list|download``: what is in a dataset, which names exist, fetch one."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect and download datasets (stats, list, download)",
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
    dl = dsub.add_parser("download", help="download a dataset that has a public URL (sha256-checked)",
                         description="Download NAME into the data folder (atomic; archive members with unsafe "
                                     "paths are refused). Without --sha256 the computed digest is printed so "
                                     "you can pin it next time.")
    dl.add_argument("name")
    dl.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $PREFREC_DATA or ./data)")
    dl.add_argument("--sha256", metavar="HEX", help="expected sha256 of the archive; a mismatch is an error")
    dl.add_argument("--url", help="download from this URL instead (a mirror)")
    dl.add_argument("--force", action="store_true", help="replace an existing copy")
    dl.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    dl.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    from prefrec.data.download import fetch_dataset
    from prefrec.data.registry import DATASETS

    folder, digest = fetch_dataset(args.name, data_dir=args.data_dir, sha256=args.sha256, force=args.force,
                                   url=args.url, timeout=args.timeout)
    pinned = args.sha256 or DATASETS[args.name].remote.sha256
    print(f"{args.name}: downloaded to {folder}")
    if pinned:
        print(f"sha256 {digest} (verified)")
    else:
        print(f"sha256 {digest} (not verified: pin it with --sha256 {digest})")
    return 0


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
        elif k == "time_range" and isinstance(v, list):
            v = format_time_range(v)
        elif isinstance(v, list):
            v = " .. ".join(f"{x:.6g}" for x in v)
        print(f"{k:16s} {v}")
    return 0


def format_time_range(v: list[float]) -> str:
    """Unix seconds (or milliseconds) as UTC dates, with the raw values; anything else (e.g.
    positions in a sequence) as plain numbers."""
    import datetime as dt

    lo, hi = min(v), max(v)
    for scale, unit in ((1, "unix seconds"), (1000, "unix ms")):
        if 1e8 * scale <= lo and hi <= 4.1e9 * scale:  # 1973 .. 2099
            day = [dt.datetime.fromtimestamp(x / scale, dt.timezone.utc).strftime("%Y-%m-%d") for x in (lo, hi)]
            return f"{day[0]} .. {day[1]} UTC ({unit} {lo:.0f} .. {hi:.0f})"
    return " .. ".join(f"{x:.0f}" if float(x).is_integer() else f"{x:.6g}" for x in v)
