"""Supervised fine-tuning (SFT) of an LM recommender: stage 1 before DPO / S-DPO / NAPO / RecPO.

Per example: the prompt x (history + candidate titles, ending with ``Answer:``) and the answer
y = ``" " + target title + EOS`` (:mod:`prefrec.lm.tokens`, the one tokenization convention:
prompt and answer are tokenized separately, so SFT trains exactly the token ids the preference
stage and the evaluator score). The loss is the mean token cross-entropy over the ANSWER tokens
only; prompt tokens and pads carry label -100.

Batching: right padding with an explicit attention mask (position ids of real tokens are then
0..L-1, unchanged by padding, so the loss of an example does not depend on its batch-mates).
Only the positions that predict an answer token go through the vocabulary projection (a boolean
``logits_to_keep`` mask): for 20-candidate prompts that is ~3% of the positions.

Normalization: a step's loss is the sum of answer-token NLL over the whole GLOBAL batch
(all gradient-accumulation micro-batches on all ranks) divided by its number of answer tokens.
Every rank knows the global order of examples, so it divides by the global token count up front
and the gradients are SUMMED over ranks; N processes x batch B then compute exactly what one
process with batch N*B computes (TRL's per-device mean would weight short answers differently).

Distributed and checkpoints follow :mod:`prefrec.train.preference`: ``accelerate launch --multi_gpu
--num_processes N`` (also on CPU-only machines: it starts torchrun, and the trainer asks for
``cpu=True`` -> gloo; ``--cpu --num_processes N`` starts a single process in accelerate 1.x,
which is detected and warned about) or ``torchrun --nproc_per_node N``; one flat all-reduce of
the trainable gradients per optimizer step (no DDP wrapper), atomic safetensors checkpoints,
``--resume``. Dropout RNG is re-seeded from
(seed, micro-batch, rank) before every micro-batch, so a resumed run draws the same masks as an
uninterrupted one on every rank without saving per-rank RNG states.

Outputs in ``output_dir``: ``config.yaml``, ``metrics.jsonl`` (``loss``, ``mean_token_accuracy``,
``grad_norm``, ``learning_rate``, ``eval_loss``, ``eval_mean_token_accuracy``),
``checkpoints/step-*``, ``final/`` (:func:`prefrec.models.lm.save_trained_lm`: the LoRA adapter +
base name; loadable by ``load_trained_lm``, ``prefrec evaluate-lm --checkpoint <run>/final`` and
the preference trainer's ``model: <run dir>``), ``plots/loss.png``, ``summary.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefrec.config import config_hash
from prefrec.errors import ConfigError, DataError
from prefrec.rundir import finished_summary, holds_run_dir, read_jsonl
from prefrec.train.engine import (
    Dist,
    Loop,
    TrainingError,
    check_fresh_run,
    checkpoint_parts,
    fit,
    make_accelerator,
    make_scaler,
    open_run_dir,
    resume_from,
    write_jsonl,
)
from prefrec.train.preference import (
    LMTrainConfig,
    TrainResult,
    _epoch_order,
    _tracker_config,
    load_reference_model,
    model_to,
    setup_training,
)

log = logging.getLogger(__name__)

__all__ = ["SFTConfig", "SFTExample", "load_sft_samples", "encode_sft_samples", "collate_sft", "answer_nll", "sft_loss",
           "train_sft", "make_sft_plots"]

IGNORE = -100


class SFTConfig(LMTrainConfig):
    """``prefrec sft``. Knob names follow TRL's SFTConfig; shared knobs in LMTrainConfig."""

    output_dir: str = "runs/sft"
    train_limit: int | None = Field(1000, ge=1)
    eval_limit: int | None = Field(100, ge=0, description="0 = no validation")
    max_length: int | None = Field(1024, ge=8, description="prompt + longest candidate answer, in tokens; "
                                                          "longer prompts lose their oldest history items")
    learning_rate: float = Field(2e-4, gt=0)
    max_grad_norm: float | None = 1.0
    per_device_train_batch_size: int = Field(8, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    # listwise objective (prefrec.lm.listwise): softmax over all candidates' answer log-likelihoods
    objective: Literal["answer_ce", "listwise"] = Field("answer_ce", description="answer_ce = token "
                                                        "cross-entropy on the target; listwise = softmax over all candidates")
    listwise_length_norm: bool = Field(False, description="listwise scores = log-likelihood / answer tokens")
    listwise_tau: float = Field(1.0, gt=0, description="listwise softmax temperature")
    listwise_ce_weight: float = Field(0.0, ge=0, description="+ this x target token cross-entropy (format)")
    train_top_layers: int | None = Field(None, ge=1, description="full fine-tuning (use_peft: false) of the top N "
                                         "blocks + final norm only; null = all parameters")
    train_lm_head: bool = Field(False, description="with train_top_layers: untie and train the LM head too")


# ----------------------------------------------------------------------------------- data
SFTExample = tuple[list[int], list[int]]  # (prompt ids, answer ids incl. EOS)


def encode_sft_samples(tokenizer, samples: Sequence[Any], where: str) -> list[SFTExample]:
    """Tokenize (prompt, target answer) once per example; errors name the sample."""
    from prefrec.lm.tokens import encode_answer, encode_prompt

    if not samples:
        raise DataError("no samples", where=where, fix="check the dataset, split and *_limit settings")
    out: list[SFTExample] = []
    for i, s in enumerate(samples):
        if not 0 <= s.target_index < len(s.candidates):
            raise DataError(f"sample {i}: target_index {s.target_index} outside its {len(s.candidates)} "
                            "candidates", where=where, fix="fix the sample builder")
        try:
            ans = encode_answer(tokenizer, s.target)
        except DataError as e:
            raise DataError(f"sample {i}: target title {s.target!r} tokenizes to nothing", where=where,
                            fix="give every item a non-empty title (check the catalog)") from e
        prompt = encode_prompt(tokenizer, s.prompt)
        if not s.prompt.strip() or not prompt:
            raise DataError(f"sample {i}: empty prompt", where=where,
                            fix="build samples with prefrec.lm.prompts (lm_samples / with_prompt)")
        out.append((prompt, ans))
    return out


def collate_sft(examples: Sequence[SFTExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and pads)."""
    T = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for b, (p, a) in enumerate(examples):
        n = len(p) + len(a)
        ids[b, :n] = torch.tensor(p + a)
        att[b, :n] = 1
        labels[b, len(p):n] = torch.tensor(a)
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def answer_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """``(summed NLL over answer tokens, number of answer tokens, number predicted right)``.

    Position t predicts token t+1, so the positions kept are those whose NEXT label is an answer
    token; only they go through ``lm_head`` (boolean ``logits_to_keep``, transformers >= 5).
    """
    dev = next(model.parameters()).device
    ids, att, labels = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
    nxt = labels[:, 1:]
    keep = F.pad(nxt != IGNORE, (0, 1), value=False)
    out = model(input_ids=ids, attention_mask=att, logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    targets = nxt[nxt != IGNORE]
    if logits.dim() == 3:  # a model that ignored the mask: pick the positions ourselves
        logits = logits[keep]
    nll = F.cross_entropy(logits, targets, reduction="sum")
    correct = int((logits.detach().argmax(-1) == targets).sum())
    return nll, int(targets.numel()), correct


def sft_loss(model, tokenizer, samples: Sequence[Any]) -> torch.Tensor:
    """Mean answer-token cross-entropy of ``samples`` in one right-padded batch (tests, notebooks)."""
    ex = encode_sft_samples(tokenizer, samples, where="sft_loss")
    nll, n, _ = answer_nll(model, collate_sft(ex, tokenizer.pad_token_id))
    return nll / n


def load_sft_samples(cfg: SFTConfig, split: str, limit: int | None) -> list:
    """Prompted samples of ``split`` (:func:`prefrec.lm.prompts.lm_samples`, seeded subsample)."""
    from prefrec.lm.prompts import lm_samples

    return lm_samples(cfg.dataset, split, data_dir=cfg.data_dir, limit=limit, seed=cfg.seed, prompt=cfg.prompt)


def _fit(samples: list, tokenizer, cfg: SFTConfig, where: str) -> tuple[list, int]:
    """Truncate prompts to ``max_length`` (oldest history first); returns (samples, number cut)."""
    from prefrec.lm.prompts import fit_prompts, style_for
    from prefrec.lm.styles import chat_wrap

    style = style_for(cfg.dataset, cfg.prompt)
    if cfg.max_length is None or not samples:
        return chat_wrap(samples, tokenizer, style), 0
    before = [s.extra.get("truncated", 0) for s in samples]
    out = fit_prompts(list(samples), tokenizer, cfg.max_length, domain=style, seed=cfg.seed)
    n_cut = sum(1 for b, s in zip(before, out) if s.extra.get("truncated", 0) > b)
    if n_cut:
        log.warning("%s: %d of %d prompts truncated to max_length=%d", where, n_cut, len(out), cfg.max_length)
    return chat_wrap(out, tokenizer, style), n_cut


def _fingerprint(examples: Sequence[SFTExample]) -> str:
    return hashlib.sha256(json.dumps(examples).encode()).hexdigest()[:16]


def _micro_seed(seed: int, micro: int, rank: int) -> int:
    return int(hashlib.sha256(f"sft:{seed}:{micro}:{rank}".encode()).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------------- model
def load_start_model(cfg: SFTConfig, device: torch.device | None = None):
    """Plain causal LM + tokenizer to fine-tune: the preference trainer's loader (names, folders,
    ``tiny``, and trained run dirs with their LoRA merged, so SFT can continue an SFT run)."""
    return load_reference_model(cfg, device)  # reads cfg.model, cfg.seed and the load options


def _is_trained_dir(name: str) -> bool:
    from prefrec.models.lm import META_FILE

    p = Path(name).expanduser()
    return p.is_dir() and ((p / META_FILE).exists() or (p / "final" / META_FILE).exists())


def _save_final(model, tokenizer, cfg: SFTConfig, run_dir: Path, extra: dict) -> Path:
    """``final/``: the LoRA adapter + the base name (small), or full weights when the base cannot
    be re-loaded by name (full fine-tuning, or SFT continued from a trained run)."""
    from prefrec.lm.runinfo import run_record
    from prefrec.models.lm import save_trained_lm

    lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "target_modules": list(cfg.lora_target_modules)}
    base = cfg.model
    p = Path(cfg.model).expanduser()
    if p.exists() and cfg.model != "tiny":
        base = str(p.resolve())  # a local folder: make the reference survive a change of cwd
    if cfg.use_peft and _is_trained_dir(cfg.model):
        model, lora = model.merge_and_unload(), None
    if not cfg.use_peft:
        lora = None
    return save_trained_lm(model, tokenizer, run_dir / "final", base=base, lora=lora,
                           extra={"stage": "sft", "start": cfg.model, **run_record(cfg), **extra})


def make_sft_plots(run_dir: str | Path) -> list[Path]:
    """Train and validation loss over steps -> ``plots/loss.png`` (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("loss", "train loss"), ("eval_loss", "validation loss")):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if key == "eval_loss" else None, ms=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("answer-token cross-entropy")
    ax.set_title(f"{run_dir.name}: SFT loss")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = run_dir / "plots" / "loss.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [out]


# ----------------------------------------------------------------------------------- trainer
def evaluate_sft(model, examples: Sequence[SFTExample], pad_id: int, dist: Dist, batch_size: int) -> dict[str, float]:
    """Validation answer-token loss and accuracy, sharded over ranks, token-weighted, no grad."""
    was = model.training
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64)  # nll, tokens, correct
    mine = list(range(dist.rank, len(examples), dist.world))
    try:
        with torch.no_grad():
            for s in range(0, len(mine), batch_size):
                nll, n, c = answer_nll(model, collate_sft([examples[i] for i in mine[s:s + batch_size]], pad_id))
                tot += torch.tensor([nll.item(), n, c], dtype=torch.float64)
    finally:
        model.train(was)
    dist.sum_(tot)
    n = max(tot[1].item(), 1.0)
    return {"eval_loss": tot[0].item() / n, "eval_mean_token_accuracy": tot[2].item() / n}


def _check_launch(dist: Dist) -> None:
    """``accelerate launch --cpu --num_processes N`` (accelerate 1.x) starts ONE process: its
    simple launcher ignores N unless mpirun is used. Say so instead of silently training alone."""
    if dist.world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" \
            and "MASTER_PORT" in os.environ:
        log.warning("accelerate launch --cpu started a single process (its --cpu launcher ignores "
                    "--num_processes); for N CPU processes use `accelerate launch --multi_gpu "
                    "--num_processes N -m prefrec.cli sft ...` (works without GPUs) or `torchrun "
                    "--nproc_per_node N -m prefrec.cli sft ...`")


@holds_run_dir(lambda cfg, **_: cfg.output_dir)  # one process per run folder, for the run's life
def train_sft(cfg: SFTConfig, *, resume: bool = False, model=None, tokenizer=None,
              train_samples: Sequence[Any] | None = None, eval_samples: Sequence[Any] | None = None
              ) -> TrainResult:
    """Run (or resume) an SFT run; see the module docstring.

    ``model``/``tokenizer`` (a plain causal LM) and ``train_samples``/``eval_samples``
    (:class:`prefrec.lm.samples.LMSample` lists) may be given directly (tests, notebooks);
    otherwise they come from ``cfg.model`` and ``cfg.dataset``. Samples are fitted to
    ``max_length`` either way.
    """
    from prefrec.checkpoint import save_checkpoint

    acc = make_accelerator(cfg)
    dist = Dist(acc)
    _check_launch(dist)
    run_dir = Path(cfg.output_dir)
    ckpt_root = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    start = check_fresh_run(run_dir, resume, cfg.model_dump(mode="json"))  # every rank decides the same
    dist.barrier()  # no rank writes before all have checked the folder
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    # --- data (errors surface before the slow model load), then model
    if train_samples is None:
        train_samples = load_sft_samples(cfg, cfg.train_split, cfg.train_limit)
    if eval_samples is None:
        eval_samples = load_sft_samples(cfg, cfg.eval_split, cfg.eval_limit) if cfg.eval_limit != 0 else []
    if model is None:
        model, tokenizer = load_start_model(cfg, acc.device)
    elif tokenizer is None:
        raise ConfigError("a model was given without its tokenizer", where="train_sft", fix="pass tokenizer=")
    from prefrec.lm.tokens import prepare_tokenizer

    prepare_tokenizer(tokenizer)
    model = model_to(model, acc.device)
    train_samples, cut_train = _fit(list(train_samples), tokenizer, cfg, f"{cfg.dataset}:{cfg.train_split}")
    eval_samples, cut_eval = _fit(list(eval_samples), tokenizer, cfg, f"{cfg.dataset}:{cfg.eval_split}")
    train_ex = encode_sft_samples(tokenizer, train_samples, where=f"{cfg.dataset}:{cfg.train_split}")
    eval_ex = encode_sft_samples(tokenizer, eval_samples, where=f"{cfg.dataset}:{cfg.eval_split}") \
        if eval_samples else []
    pad_id = tokenizer.pad_token_id
    data_fp = _fingerprint(train_ex)

    if cfg.train_lm_head:  # untie BEFORE the optimizer is built, so it holds the head's own weights
        from prefrec.lm.listwise import untie_head

        if not cfg.train_top_layers:
            raise ConfigError("train_lm_head needs train_top_layers", where="train_lm_head",
                              fix="set train_top_layers (and use_peft: false), or train_lm_head: false")
        untie_head(model)
    keep_only = None
    if cfg.train_top_layers:  # frozen params get no grad; the optimizer holds only the top blocks
        from prefrec.lm.listwise import freeze_below

        if cfg.use_peft:
            raise ConfigError("train_top_layers needs full fine-tuning", where="train_top_layers",
                              fix="set use_peft: false, or train_top_layers: null")

        def keep_only(m):
            return freeze_below(m, cfg.train_top_layers, head=cfg.train_lm_head)
    model, params, sched, optimizer, scheduler = setup_training(model, cfg, len(train_ex), dist.world, acc.device,
                                                                keep_only=keep_only)
    list_ex = None
    if cfg.objective == "listwise":
        from prefrec.lm.listwise import encode_listwise, listwise_batch_loss

        list_ex = encode_listwise(tokenizer, train_samples, where=f"{cfg.dataset}:{cfg.train_split}")
    scaler = make_scaler(acc)
    bs, accum, global_micro, micro_per_epoch = sched.batch_size, sched.accum, sched.global_micro, sched.micro_per_epoch

    step = 0
    state: dict = {}  # the checkpoint's state when resuming
    if start is not None:
        start, state, step = resume_from(ckpt_root, params, optimizer, scheduler, sched, scaler)
        if state.get("data") != data_fp:
            raise TrainingError("the checkpoint was trained on other examples than the current config gives "
                                "(dataset, limits, seed, max_length or tokenizer changed)", where=str(start),
                                fix="resume with the original settings, or start a new run (another output_dir)")
        log.info("resumed from %s (step %d)", start, step)
        if step >= sched.total_steps and (done := finished_summary(run_dir, step)) is not None:
            return TrainResult(run_dir=run_dir, steps=step, final_metrics=done["train"], eval_metrics=done.get("eval", {}))
    open_run_dir(cfg, run_dir, metrics_path, dist, step if start is not None else None)
    if any(t != "none" for t in cfg.report_to):
        acc.init_trackers(run_dir.name, config=_tracker_config(cfg))
    if dist.main:
        log.info("SFT: %d train / %d eval examples (%d / %d prompts truncated), %d steps of %d examples "
                 "on %d process(es), %s, %s", len(train_ex), len(eval_ex), cut_train, cut_eval, sched.total_steps,
                 global_micro * accum, dist.world, acc.device, acc.prefrec_precision)

    def run_eval(at: int) -> dict[str, float]:
        if not eval_ex:
            return {}
        m = evaluate_sft(model, eval_ex, pad_id, dist, cfg.per_device_eval_batch_size)
        if dist.main:
            write_jsonl(metrics_path, {"step": at, "epoch": round(at / sched.steps_per_epoch, 4), **m})
        return m

    def save(at: int, last_train: dict, last_eval: dict) -> None:
        if dist.main:
            save_checkpoint(ckpt_root, at, checkpoint_parts(params, optimizer, scheduler, scaler),
                            {"data": data_fp, "config_hash": config_hash(cfg), "epoch": at / sched.steps_per_epoch,
                             "schedule": sched.key(), "train": last_train, "eval": last_eval}, keep=cfg.save_total_limit)

    def global_rows(g: int) -> list[int]:
        epoch, within = divmod(g, micro_per_epoch)
        order = _epoch_order(len(train_ex), cfg.seed, epoch, global_micro)
        return order[within * global_micro:(within + 1) * global_micro]

    # the loss of a step is normalised by the answer tokens of the whole GLOBAL batch (module
    # docstring); listwise: by its number of examples ("tokens" = rows, "correct" = target ranked first)
    n_global: dict[int, int] = {}

    def micro(g: int, rows: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        step_of = g // accum
        if step_of not in n_global:
            n_global.clear()
            step_rows = [i for m in range(accum) for i in global_rows(step_of * accum + m)]
            n_global[step_of] = len(step_rows) if list_ex is not None else sum(len(train_ex[i][1]) for i in step_rows)
        torch.manual_seed(_micro_seed(cfg.seed, g, dist.rank))
        if list_ex is None:
            nll, n, c = answer_nll(model, collate_sft([train_ex[i] for i in rows], pad_id))
        else:
            nll, st = listwise_batch_loss(model, [list_ex[i] for i in rows], pad_id, length_norm=cfg.listwise_length_norm,
                                          tau=cfg.listwise_tau, ce_weight=cfg.listwise_ce_weight)
            n, c = len(rows), round(st["hit@1"] * len(rows))
        return nll / n_global[step_of], {"nll": nll.item(), "tokens": n, "correct": c, "loss_value": nll.item()}

    def summarize(sums: dict[str, float]) -> dict[str, float]:
        t = max(sums["tokens"], 1.0)
        return {"loss": sums["nll"] / t, "mean_token_accuracy": sums["correct"] / t, "num_tokens": int(sums["tokens"])}

    loop = Loop(name="sft", acc=acc, dist=dist, cfg=cfg, schedule=sched, params=params, optimizer=optimizer,
                scheduler=scheduler, rows_of=lambda g: global_rows(g)[dist.rank * bs:(dist.rank + 1) * bs],
                micro=micro, summarize=summarize, evaluate=run_eval, save=save, metrics_path=metrics_path,
                grad_mean=False, scaler=scaler, where=str(run_dir), log_keys=("mean_token_accuracy",))
    step, last_train, last_eval, seconds = fit(loop, step, state.get("train"), state.get("eval"))
    # ranks must hold identical weights (same init, summed gradients): record one checksum per rank
    sums = torch.zeros(dist.world, dtype=torch.float64)
    sums[dist.rank] = sum(p.detach().double().abs().sum().item() for p in params.values())
    dist.sum_(sums)
    if len(set(sums.tolist())) > 1:
        log.warning("trainable weights differ across ranks (checksums %s)", sums.tolist())

    if dist.main:
        if cfg.plots:
            try:
                make_sft_plots(run_dir)
            except ImportError:
                log.warning("matplotlib is not installed: no plots (pip install 'prefrec[plot]')")
        if cfg.save_final_model:
            _save_final(model, tokenizer, cfg, run_dir, {"eval": last_eval})
        (run_dir / "summary.json").write_text(json.dumps(
            {"steps": step, "train": last_train, "eval": last_eval, "examples": len(train_ex),
             "truncated": {"train": cut_train, "eval": cut_eval}, "processes": dist.world,
             "precision": acc.prefrec_precision, "device": str(acc.device),
             "rank_weight_checksums": sums.tolist(),
             "seconds": round(seconds, 1)}, indent=1))
    dist.barrier()
    if acc.trackers:
        acc.end_training()
    return TrainResult(run_dir=run_dir, steps=step, final_metrics=last_train, eval_metrics=last_eval)
