"""The ``prefrec`` command: thin argparse layer over typed configs.

Each subcommand lives in ``prefrec.commands.<name>`` and exposes ``register(subparsers)``.
Command modules import heavy libraries (torch models, transformers) only inside their run
function, so ``prefrec --help`` and the CF path start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from prefrec import __version__
from prefrec.errors import PrefrecError

# Order here is the order in --help.
COMMAND_MODULES = ["demo", "run", "data", "train_cf", "compare", "sft", "evaluate_lm", "baseline",
                   "preference", "recommend"]

EPILOG = """\
typical use:
  prefrec data stats ml-100k                      # what is in a dataset
  prefrec train-cf --config configs/ml100k_mf_psl.yaml train.epochs=20
  prefrec compare --config configs/ml100k_mf_psl.yaml --losses bpr sl psl
  prefrec sft --config configs/ml100k_sft.yaml     # LM recommender, stage 1
  prefrec sdpo --config configs/ml100k_sdpo.yaml   # Softmax-DPO on top of SFT
  prefrec run experiment.yaml                     # a whole study + report.md

Every --config command takes key=value overrides after the options (dotted for nested
keys, e.g. loss.tau=0.05). Unknown keys are errors. Data is read from --data-dir, else
$PREFREC_DATA, else ./data. Run `prefrec <command> --help` for each command's options.
"""


def add_common(p: argparse.ArgumentParser, config: bool = True) -> None:
    """Options shared by every config-driven command."""
    if config:
        p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (see configs/)")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, dotted for nested keys (e.g. learning_rate=1e-4, train.epochs=20)")
    p.add_argument("--data-dir", metavar="DIR", help="dataset folder (default: $PREFREC_DATA or ./data)")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    """``--overwrite`` of the training commands (:func:`prefrec.rundir.move_aside`)."""
    p.add_argument("--overwrite", action="store_true",
                   help="move a previous run in the output folder aside (kept as <folder>.old-<time>) "
                        "and start afresh, instead of refusing")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefrec",
        description="Train and evaluate recommenders with ranking losses (BPR, SL, PSL) and "
                    "preference optimization (DPO, S-DPO, NAPO, RecPO), on embedding models and LMs.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"prefrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"prefrec.commands.{name}")
        except ModuleNotFoundError as e:  # a command whose optional pieces are absent
            if e.name and e.name.startswith("prefrec.commands"):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow an option (`run study.yaml --dry-run a=b`)
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # peft asks transformers for a renamed attribute; the FutureWarning is not the user's to act on
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.command is None:
        parser.print_help()
        return 0
    # transformers' "Loading weights" bar (one per model load) clutters logs and `recommend` output;
    # prefrec logs the load time itself. Must be set before transformers is imported.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    before = os.environ.get("PREFREC_DATA")
    if getattr(args, "data_dir", None):
        os.environ["PREFREC_DATA"] = args.data_dir  # for the command's duration only (main() is called in-process too)
    try:
        rc = args.func(args)
        return int(rc or 0)
    except PrefrecError as e:
        if args.debug:
            raise
        print(f"prefrec: error: {e}", file=sys.stderr)
        if not args.debug:
            print("(run with --debug for the full traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prefrec: interrupted", file=sys.stderr)
        return 130
    finally:
        if before is None:
            os.environ.pop("PREFREC_DATA", None)
        else:
            os.environ["PREFREC_DATA"] = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
