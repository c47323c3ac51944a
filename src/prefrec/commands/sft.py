"""``prefrec sft``: supervised fine-tuning of an LM recommender (stage 1 before S-DPO)."""

from __future__ import annotations

import argparse

from prefrec.cli import add_common, add_overwrite

HELP = """\
Fine-tune a causal LM (SmolLM2-135M by default, LoRA on the seven projections) to name the next
item: prompt = user history + candidate titles, answer = " " + target title + EOS; the loss is
the cross-entropy over the answer tokens only. Writes <output_dir>/: config.yaml, metrics.jsonl
(loss, eval_loss, learning_rate, ...), checkpoints/ (--resume), final/, plots/, summary.json.

The result feeds the next stages:
  prefrec evaluate-lm --checkpoint <output_dir>/final --dataset ml-100k
  prefrec sdpo --config configs/ml100k_sdpo.yaml model=<output_dir>

The dataset is any LM case source: ml-100k, llara-lastfm, S-DPO or Alpaca JSON, or your own
interaction log via a data card (dataset=examples/own-data/card.yaml, docs/datasets.md).
The prompt section (prompt.domain, prompt.template, prompt.chat_template) is recorded in
final/ and reused by evaluate-lm, recommend and prefrec.load.

examples:
  prefrec sft --config configs/ml100k_sft.yaml --data-dir ../shared/data
  prefrec sft --config examples/own-data/sft.yaml                # the example listening log
  prefrec sft --config configs/ml100k_sft.yaml train_limit=64 max_steps=8 output_dir=/tmp/sft_smoke
  prefrec sft --config configs/lastfm_sft.yaml learning_rate=1e-4 num_train_epochs=2
  prefrec sft --config configs/ml100k_sft.yaml --resume        # continue a killed run
  # 2 processes on CPU: --multi_gpu selects accelerate's torchrun launcher and works without GPUs
  # (with --cpu, accelerate 1.x starts ONE process whatever --num_processes says)
  accelerate launch --multi_gpu --num_processes 2 -m prefrec.cli sft --config configs/ml100k_sft.yaml
"""


def register(sub) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning of an LM recommender (answer-token loss)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    add_overwrite(p)
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints if present")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from prefrec.rundir import overwrite_if_asked
    from prefrec.config import load_config
    from prefrec.train.sft import SFTConfig, train_sft

    cfg = load_config(SFTConfig, args.config, args.overrides)
    if args.data_dir and cfg.data_dir is None:
        cfg.data_dir = args.data_dir
    overwrite_if_asked(args, cfg.output_dir)
    result = train_sft(cfg, resume=args.resume)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        ev = result.eval_metrics.get("eval_loss")
        print(f"trained {result.steps} steps: loss {result.final_metrics.get('loss', float('nan')):.4f}"
              + (f", eval_loss {ev:.4f}" if ev is not None else ""))
        print(f"run directory: {result.run_dir}")
    return 0
