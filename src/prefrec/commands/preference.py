"""``prefrec dpo | sdpo | napo | recpo``: preference training of an LM recommender after SFT.

One trainer (:mod:`prefrec.train.preference`), four entry points that fix the objective:

* ``dpo``   — loss ``dpo`` with one negative (K = 1);
* ``sdpo``  — Softmax-DPO by default, or ANY reward loss of :mod:`prefrec.losses` over the same
  implicit rewards (``loss: psl`` + ``loss_kwargs`` is "PSL over LM rewards");
* ``napo``  — NAPO (shared negatives + dynamic margin), options in the ``napo:`` section;
* ``recpo`` — RecPO (rating x recency margins), options in the ``recpo:`` section.

Heavy imports happen inside :func:`run` so ``prefrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json

from prefrec.errors import ConfigError

COMMON_TAIL = """
key knobs (key=value overrides, dotted for sections; names follow TRL's DPOConfig):
  model=runs/ml100k_sft          start point: an SFT run dir (uses its final/), a saved model
                                 folder, a model name (smollm2-135m) or 'tiny' (tests)
  dataset=ml-100k                ml-100k | llara-lastfm | S-DPO JSON | Alpaca JSON (dpo/sdpo) |
                                 your own log: a data card (card.yaml) or "log.csv?user=..&item=.."
  prompt.domain=music            prompt wording (movie, music, book, product, item) or
                                 prompt.template=FILE; prompt.chat_template=true for instruct models
  beta=1.0                       reward scale r = beta * (log pi - log pi_ref); must be > 0
  num_negatives=3                K negatives per example, drawn from the 19 non-target candidates
  learning_rate=1e-5 per_device_train_batch_size=4 gradient_accumulation_steps=1
  num_train_epochs=1 max_steps=-1 train_limit=200 eval_limit=50
  use_peft=true lora_r=8 lora_alpha=32  (a FRESH LoRA on the merged SFT model: step 0 = reference)
  output_dir=runs/<name>         config.yaml, metrics.jsonl, checkpoints/, final/, plots/*.png

The reference log-probs of all candidates are computed once and cached on disk
(ref_cache_dir, default <output_dir>/../.ref_cache); a cache of another model, tokenizer or
prompt template is detected and never reused. --resume continues from the last checkpoint.
Distributed (CPU too): accelerate launch --multi_gpu --num_processes 2 -m prefrec.cli {cmd} --config ...
(or torchrun --nproc_per_node 2 -m prefrec.cli ...; NOT `accelerate launch --cpu`, which starts
one process). The global batch is per_device_train_batch_size x processes; the result equals a
1-process run with the same global batch (lora_dropout: 0).
"""

COMMANDS: dict[str, dict] = {
    "dpo": dict(
        loss="dpo", base={"loss": "dpo", "num_negatives": 1, "output_dir": "runs/dpo"},
        help="DPO on an SFT LM recommender (one negative per example)",
        what="""\
DPO (Rafailov et al., 2023) for recommendation: for a prompt x (a user's history + 20 candidate
titles), the true next item y_w and ONE negative y_l drawn from the other candidates,
  loss = -log sigmoid(r(y_w) - r(y_l)),   r(y) = beta * (log pi(y|x) - log pi_ref(y|x)),
pi_ref = the SFT model. num_negatives is fixed to 1 (use `prefrec sdpo` for K > 1).
""",
        examples="""\
examples:
  prefrec dpo --config configs/ml100k_dpo.yaml --data-dir ../shared/data
  prefrec dpo --config configs/ml100k_dpo.yaml beta=0.1 max_steps=50
  prefrec dpo --config configs/ml100k_dpo.yaml --resume
"""),
    "sdpo": dict(
        loss=None, base={"loss": "sdpo", "output_dir": "runs/sdpo"},
        help="Softmax-DPO (or any ranking loss over LM rewards) on an SFT LM recommender",
        what="""\
Softmax-DPO (Chen et al., NeurIPS 2024): the true next item against K negatives at once,
  loss = -log sigmoid(-log sum_k exp(r(y_k) - r(y_w))),   r(y) = beta * (log pi(y|x) - log pi_ref(y|x)).
K = 1 is DPO. Any ranking loss of prefrec.losses works over the same rewards with one config
line: `loss: psl` + `loss_kwargs: {tau: 0.5}` is PSL over LM rewards (also bpr, sl, bsl).
""",
        examples="""\
examples:
  prefrec sdpo --config configs/ml100k_sdpo.yaml --data-dir ../shared/data
  prefrec sdpo --config configs/ml100k_sdpo.yaml num_negatives=7 beta=1.0
  prefrec sdpo --config configs/ml100k_sdpo.yaml loss=psl loss_kwargs.tau=0.5   # PSL over LM rewards
  prefrec sdpo --config configs/lastfm_sdpo.yaml --resume
"""),
    "napo": dict(
        loss="napo", base={"loss": "napo", "output_dir": "runs/napo"},
        help="NAPO: S-DPO with in-batch negative sharing and a dynamic margin",
        what="""\
NAPO (Ding et al., 2025): S-DPO where each example also uses the negatives of its most similar
other examples in the global batch (similarity = a SASRec's user states), with a margin
gamma_t = gamma0 * (1 - alpha * (M_b - Mbar)) that shrinks when the negatives score high under
SASRec (likely false negatives). Options in the napo: section:
  napo.sasrec=runs/sasrec        SASRec run of `prefrec baseline --model sasrec` on the SAME
                                 dataset and seed (a SASRec trained on another split is refused)
  napo.share_ratio=0.7           k = int(share_ratio * (N_global - 1)) neighbours, in (0, 1]
  napo.share_negatives=true      sharing needs >= 2 examples per global batch
  napo.gamma0=1.0 napo.alpha=0.3 napo.momentum=0.9   margin (gamma0=0: none; alpha=0: fixed)
  napo.use_reference=null        null = follow reference_free (the authors are reference-free)
""",
        examples="""\
examples:
  prefrec napo --config configs/ml100k_napo.yaml --data-dir ../shared/data
  prefrec napo --config configs/ml100k_napo.yaml napo.share_ratio=0.5 napo.alpha=0
  prefrec napo --config configs/ml100k_napo.yaml napo.share_negatives=false napo.alpha=0  # no SASRec
"""),
    "recpo": dict(
        loss="recpo", base={"loss": "recpo", "output_dir": "runs/recpo"},
        help="RecPO: S-DPO with margins from rating intensity and recency",
        what="""\
RecPO (Ouyang et al., 2025): training candidates are a user's FUTURE interactions plus random
unseen items, each scored s = rating / (1 + step)^decay; the top-scored one is preferred and must
beat negative j by a margin m_j = lambda * s_w / s_j (margin: ratio) or lambda * log(1 + s_w - s_j)
(margin: log). Needs star ratings and timestamps (ml-100k); validation/test use S-DPO's cases.
Options in the recpo: section:
  recpo.lambda=1.0 recpo.margin=ratio recpo.decay=0.5 recpo.max_follow=20
  recpo.max_cases=10000 recpo.min_chosen_rating=4 recpo.max_history=10 recpo.min_history=3
""",
        examples="""\
examples:
  prefrec recpo --config configs/ml100k_recpo.yaml --data-dir ../shared/data
  prefrec recpo --config configs/ml100k_recpo.yaml recpo.lambda=2 recpo.margin=log
"""),
}


def register(sub) -> None:
    from prefrec.cli import add_common, add_overwrite

    for cmd, spec in COMMANDS.items():
        p = sub.add_parser(cmd, help=spec["help"],
                           description=spec["what"] + COMMON_TAIL.format(cmd=cmd) + "\n" + spec["examples"],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_common(p)
        add_overwrite(p)
        p.add_argument("--resume", action="store_true",
                       help="continue from <output_dir>/checkpoints (same config and reference)")
        p.set_defaults(func=run, preference_command=cmd)


def load_command_config(cmd: str, path: str | None, overrides: list[str] | None):
    """The resolved :class:`PreferenceConfig` for ``prefrec <cmd>``: the command's loss is the
    default under the file; a file or override naming another command's loss is an error
    (rather than silently training something else than the command says)."""
    from prefrec.config import load_config
    from prefrec.train.preference import OBJECTIVE_LOSSES, PreferenceConfig

    spec = COMMANDS[cmd]
    cfg = load_config(PreferenceConfig, path, overrides, base=spec["base"])
    fixed = spec["loss"]
    if fixed is not None and cfg.loss != fixed:
        other = "sdpo" if cfg.loss not in OBJECTIVE_LOSSES else cfg.loss
        raise ConfigError(f"`prefrec {cmd}` trains loss {fixed!r} but the config sets loss: {cfg.loss}",
                          where=path or "loss", fix=f"remove the loss key, or run `prefrec {other}`")
    if fixed is None and cfg.loss in OBJECTIVE_LOSSES:
        raise ConfigError(f"loss {cfg.loss!r} has its own command", where=path or "loss",
                          fix=f"run `prefrec {cfg.loss} --config ...`")
    return cfg


def run(args: argparse.Namespace) -> int:
    from prefrec.rundir import overwrite_if_asked
    from prefrec.train.preference import train_preference

    cfg = load_command_config(args.preference_command, args.config, args.overrides)
    overwrite_if_asked(args, cfg.output_dir)
    result = train_preference(cfg, resume=args.resume)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        show = {k: round(v, 4) for k, v in {**result.final_metrics, **result.eval_metrics}.items()
                if isinstance(v, float)}
        print(json.dumps({"steps": result.steps, **show}, indent=1))
        print(f"\nrun directory: {result.run_dir}")
        print(f"final model:   {result.run_dir / 'final'} (prefrec evaluate-lm --checkpoint {result.run_dir})")
    return 0
