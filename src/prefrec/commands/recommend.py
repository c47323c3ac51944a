"""``prefrec recommend``: top-k items for users (CF run) or ranked candidates (LM run)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "recommend", help="recommend with a trained run (CF: top-k per user; LM: rank candidates)",
        description="Use a trained run directory. CF runs (MF/LightGCN/XSimGCL): the top --k items of each "
                    "--users id, items the user trained on masked (as in evaluation). LM runs (sft/sdpo "
                    "stages): the --candidates titles ranked after the --history titles, by the summed "
                    "log-probability of each title, with the prompt the run trained with (its domain or "
                    "template file and chat wrapping, recorded in <run>/final).",
        epilog='examples:\n  prefrec recommend --run runs/demo/psl --users 1 2 3 --k 10\n'
               '  prefrec recommend --run runs/demo/sdpo --history "Heat (1995)" "Alien (1979)" '
               '--candidates "Toy Story (1995)" "Fargo (1996)" --format json',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--users", nargs="+", metavar="ID", default=[], help="CF: user ids as in the dataset")
    p.add_argument("--k", type=int, default=None, help="how many items (CF default 10; LM default all)")
    p.add_argument("--history", nargs="+", metavar="TITLE", default=[], help="LM: the titles seen, oldest first")
    p.add_argument("--candidates", nargs="+", metavar="TITLE", default=[], help="LM: the titles to rank")
    p.add_argument("--mask", choices=("train", "seen", "none"), default="train",
                   help="CF: items to exclude: the training split (as evaluation; default), "
                        "training + validation (seen), or none")
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default csv)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $PREFREC_DATA or ./data)")
    p.add_argument("--device", default="auto", help="LM runs: auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefrec.api import open_run, to_csv, to_json
    from prefrec.errors import ConfigError

    if args.k is not None and args.k < 1:
        raise ConfigError(f"--k {args.k} asks for no items", where="--k", fix="give --k 1 or more (CF default 10)")
    rec = open_run(args.run, data_dir=args.data_dir, device=args.device)
    if rec.kind == "cf":
        rows = rec.recommend(args.users, k=args.k or 10, mask=args.mask, history=args.history,
                             candidates=args.candidates)
    else:
        rows = rec.recommend(args.users, k=args.k, history=args.history, candidates=args.candidates)
    print(to_json(rows) if args.format == "json" else to_csv(rows), end="" if args.format == "csv" else "\n")
    return 0
