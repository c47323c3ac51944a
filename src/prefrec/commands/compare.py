"""``prefrec compare``: the same config trained with several losses, one table."""

from __future__ import annotations

import argparse
import json

from prefrec.cli import add_common, add_overwrite

HELP = """\
Train one config once per loss label and print one table of test metrics.

A label is looked up in the config's `presets:` mapping (label -> dotted overrides, e.g. the
paper's tau for that loss); otherwise `psl-<activation>` means loss.name=psl with that
activation and any other label is a loss name (bpr, sl, sl_paper, psl, bsl, advinfonce, llpauc).
Each run goes to runs/<name>-<label>/. Command-line key=value overrides apply to every run, after
the preset.

example:
  prefrec compare --config configs/ml100k_mf_psl.yaml --losses bpr sl bsl psl-tanh psl-atan psl-relu
"""


def register(sub) -> None:
    p = sub.add_parser("compare", help="train one config with several losses, print one table",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--losses", nargs="+", required=True, metavar="LABEL",
                   help="loss labels: bpr sl sl_paper bsl psl psl-tanh psl-atan psl-relu advinfonce llpauc "
                        "or preset names")
    add_overwrite(p)
    p.add_argument("--resume", action="store_true", help="resume each run from its checkpoints")
    p.set_defaults(func=run)


def label_overrides(label: str, presets: dict[str, dict]) -> list[str]:
    """Dotted overrides for one loss label (preset first, else parsed from the label)."""
    if label in presets:
        return [f"{k}={json.dumps(v)}" for k, v in presets[label].items()]
    if label.startswith("psl-"):
        return ["loss.name=psl", f"loss.activation={label[4:]}"]
    return [f"loss.name={label}"]


def label_config(config: str | None, base, label: str, overrides: list[str]):
    """The resolved config of one ``--losses`` label, its loss built once so that a bad label
    (``psl-foo``, ``bpx``) fails before any run trains, naming the label."""
    from prefrec.cf.config import CFConfig
    from prefrec.config import load_config
    from prefrec.errors import ConfigError
    from prefrec.train.cf import CF_LOSSES, build_loss

    over = label_overrides(label, base.presets) + [f"name={base.name}-{label}"] + overrides
    try:
        cfg = load_config(CFConfig, config, over)
        build_loss(cfg)
    except ConfigError as e:
        import difflib

        close = difflib.get_close_matches(label, list(base.presets) + list(CF_LOSSES)
                                          + ["psl-tanh", "psl-atan", "psl-relu", "psl-exp"], n=1)
        raise ConfigError(f"label {label!r}: {e.what}", where="--losses",
                          fix=(f"did you mean {close[0]!r}? " if close else "") + (e.fix or "")
                          + "; labels are presets of the config (" + (", ".join(base.presets) or "none")
                          + "), loss names or psl-<activation>") from None
    return cfg


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from prefrec.cf.config import CFConfig
    from prefrec.commands.train_cf import format_table
    from prefrec.config import load_config
    from prefrec.errors import ConfigError
    from prefrec.rundir import child, overwrite_if_asked
    from prefrec.logtag import log_tag
    from prefrec.train.cf import train_cf

    # `--losses a b key=value` : argparse hands trailing overrides to --losses; split them off.
    labels = [x for x in args.losses if "=" not in x]
    overrides = [x for x in args.losses if "=" in x] + list(args.overrides)
    if not labels:
        raise ConfigError("no loss label given", where="--losses", fix="e.g. --losses bpr sl psl-tanh")
    base = load_config(CFConfig, args.config, overrides)
    results: dict[str, dict] = {}
    cfgs = {}
    for label in labels:  # validate every label's config (and loss) before training any
        cfgs[label] = label_config(args.config, base, label, overrides)
        child(base.output_dir, cfgs[label].name, "--losses")  # a label cannot leave output_dir
    for label, cfg in cfgs.items():
        overwrite_if_asked(args, child(cfg.output_dir, cfg.name, "name"))
        with log_tag(label):
            results[label] = train_cf(cfg, data_dir=args.data_dir, resume=args.resume)
    table = format_table(results, base.train.ks)
    print(table)
    out = Path(base.output_dir) / f"{base.name}-compare.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# compare {base.name}\n\nconfig `{args.config}`, overrides {overrides}\n\n{table}\n")
    print(f"\ntable written to {out}")
    return 0
