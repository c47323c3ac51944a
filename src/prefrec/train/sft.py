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
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefrec.config import config_hash
from prefrec.errors import ConfigError, DataError
from prefrec.train.preference import (
    LMTrainConfig,
    TrainingError,
    TrainResult,
    _Dist,
    _epoch_order,
    _read_jsonl,
    _write_jsonl,
    load_reference_model,
    open_run_dir,
    restore_checkpoint,
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

    return lm_samples(cfg.dataset, split, data_dir=cfg.data_dir, limit=limit, seed=cfg.seed)


def _fit(samples: list, tokenizer, cfg: SFTConfig, where: str) -> tuple[list, int]:
    """Truncate prompts to ``max_length`` (oldest history first); returns (samples, number cut)."""
    from prefrec.lm.prompts import dataset_domain, fit_prompts

    if cfg.max_length is None or not samples:
        return samples, 0
    before = [s.extra.get("truncated", 0) for s in samples]
    out = fit_prompts(list(samples), tokenizer, cfg.max_length, domain=dataset_domain(cfg.dataset), seed=cfg.seed)
    n_cut = sum(1 for b, s in zip(before, out) if s.extra.get("truncated", 0) > b)
    if n_cut:
        log.warning("%s: %d of %d prompts truncated to max_length=%d", where, n_cut, len(out), cfg.max_length)
    return out, n_cut


def _fingerprint(examples: Sequence[SFTExample]) -> str:
    return hashlib.sha256(json.dumps(examples).encode()).hexdigest()[:16]


def _micro_seed(seed: int, micro: int, rank: int) -> int:
    return int(hashlib.sha256(f"sft:{seed}:{micro}:{rank}".encode()).hexdigest()[:8], 16)


# ----------------------------------------------------------------------------------- model
def load_start_model(cfg: SFTConfig):
    """Plain causal LM + tokenizer to fine-tune: the preference trainer's loader (names, folders,
    ``tiny``, and trained run dirs with their LoRA merged, so SFT can continue an SFT run)."""
    return load_reference_model(cfg)  # only reads cfg.model and cfg.seed


def _is_trained_dir(name: str) -> bool:
    from prefrec.models.lm import META_FILE

    p = Path(name).expanduser()
    return p.is_dir() and ((p / META_FILE).exists() or (p / "final" / META_FILE).exists())


def _save_final(model, tokenizer, cfg: SFTConfig, run_dir: Path, extra: dict) -> Path:
    """``final/``: the LoRA adapter + the base name (small), or full weights when the base cannot
    be re-loaded by name (full fine-tuning, or SFT continued from a trained run)."""
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
                           extra={"stage": "sft", "dataset": cfg.dataset, "start": cfg.model, **extra})


def make_sft_plots(run_dir: str | Path) -> list[Path]:
    """Train and validation loss over steps -> ``plots/loss.png`` (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = _read_jsonl(run_dir / "metrics.jsonl")
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
def evaluate_sft(model, examples: Sequence[SFTExample], pad_id: int, dist: _Dist, batch_size: int) -> dict[str, float]:
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


def _check_launch(dist: _Dist) -> None:
    """``accelerate launch --cpu --num_processes N`` (accelerate 1.x) starts ONE process: its
    simple launcher ignores N unless mpirun is used. Say so instead of silently training alone."""
    if dist.world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" \
            and "MASTER_PORT" in os.environ:
        log.warning("accelerate launch --cpu started a single process (its --cpu launcher ignores "
                    "--num_processes); for N CPU processes use `accelerate launch --multi_gpu "
                    "--num_processes N -m prefrec.cli sft ...` (works without GPUs) or `torchrun "
                    "--nproc_per_node N -m prefrec.cli sft ...`")


def train_sft(cfg: SFTConfig, *, resume: bool = False, model=None, tokenizer=None,
              train_samples: Sequence[Any] | None = None, eval_samples: Sequence[Any] | None = None
              ) -> TrainResult:
    """Run (or resume) an SFT run; see the module docstring.

    ``model``/``tokenizer`` (a plain causal LM) and ``train_samples``/``eval_samples``
    (:class:`prefrec.lm.samples.LMSample` lists) may be given directly (tests, notebooks);
    otherwise they come from ``cfg.model`` and ``cfg.dataset``. Samples are fitted to
    ``max_length`` either way.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from prefrec.checkpoint import latest_checkpoint, save_checkpoint
    from prefrec.models.lm import cpu_fast_math

    acc = Accelerator(cpu=not torch.cuda.is_available())
    if acc.device.type == "cpu":
        cpu_fast_math()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = _Dist(acc)
    _check_launch(dist)
    run_dir = Path(cfg.output_dir)
    ckpt_root = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    start = latest_checkpoint(ckpt_root) if resume else None
    if resume and start is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_root)
    if not resume and latest_checkpoint(ckpt_root) is not None:  # every rank raises: no hang
        raise ConfigError(f"{run_dir} already holds checkpoints of a run", where="output_dir",
                          fix="pass --resume to continue it, or choose another output_dir")
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    # --- data (errors surface before the slow model load), then model
    if train_samples is None:
        train_samples = load_sft_samples(cfg, cfg.train_split, cfg.train_limit)
    if eval_samples is None:
        eval_samples = load_sft_samples(cfg, cfg.eval_split, cfg.eval_limit) if cfg.eval_limit != 0 else []
    if model is None:
        model, tokenizer = load_start_model(cfg)
    elif tokenizer is None:
        raise ConfigError("a model was given without its tokenizer", where="train_sft", fix="pass tokenizer=")
    from prefrec.lm.tokens import prepare_tokenizer

    prepare_tokenizer(tokenizer)
    model.to(acc.device)
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
    model, params, sched, optimizer, scheduler = setup_training(model, cfg, len(train_ex), dist.world)
    if cfg.train_top_layers:  # frozen params get no grad, so AdamW skips them
        from prefrec.lm.listwise import freeze_below

        if cfg.use_peft:
            raise ConfigError("train_top_layers needs full fine-tuning", where="train_top_layers",
                              fix="set use_peft: false, or train_top_layers: null")
        keep = set(freeze_below(model, cfg.train_top_layers, head=cfg.train_lm_head))
        params = {n: p for n, p in params.items() if n in keep}
    list_ex = None
    if cfg.objective == "listwise":
        from prefrec.lm.listwise import encode_listwise, listwise_batch_loss

        list_ex = encode_listwise(tokenizer, train_samples, where=f"{cfg.dataset}:{cfg.train_split}")
    bs, accum, global_micro = sched.batch_size, sched.accum, sched.global_micro
    micro_per_epoch, total_steps, steps_per_epoch = sched.micro_per_epoch, sched.total_steps, sched.steps_per_epoch

    step = 0
    if start is not None:
        state, step = restore_checkpoint(start, params, optimizer, scheduler)
        if state.get("data") != data_fp:
            raise TrainingError("the checkpoint was trained on other examples than the current config gives "
                                "(dataset, limits, seed, max_length or tokenizer changed)", where=str(start),
                                fix="resume with the original settings, or start a new run (another output_dir)")
        log.info("resumed from %s (step %d)", start, step)
    open_run_dir(cfg, run_dir, metrics_path, dist, step if start is not None else None)
    if dist.main:
        log.info("SFT: %d train / %d eval examples (%d / %d prompts truncated), %d steps of %d examples "
                 "on %d process(es)", len(train_ex), len(eval_ex), cut_train, cut_eval, total_steps,
                 global_micro * accum, dist.world)

    def run_eval() -> dict[str, float]:
        if not eval_ex:
            return {}
        m = evaluate_sft(model, eval_ex, pad_id, dist, cfg.per_device_eval_batch_size)
        if dist.main:
            _write_jsonl(metrics_path, {"step": step, "epoch": round(step / steps_per_epoch, 4), **m})
        return m

    def save() -> None:
        if dist.main:
            save_checkpoint(ckpt_root, step, {"model": {n: p.detach() for n, p in params.items()},
                                              "optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict(),
                                              "rng": {"torch": torch.get_rng_state()}},
                            {"data": data_fp, "config_hash": config_hash(cfg), "epoch": step / steps_per_epoch},
                            keep=cfg.save_total_limit)
        dist.barrier()

    def micro_rows(g: int) -> list[int]:
        epoch, within = divmod(g, micro_per_epoch)
        order = _epoch_order(len(train_ex), cfg.seed, epoch, global_micro)
        return order[within * global_micro:(within + 1) * global_micro]

    last_train: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    t_start = time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, desc="sft", unit="step", dynamic_ncols=True,
               disable=not (dist.main and sys.stderr.isatty()))
    while step < total_steps:
        t0 = time.perf_counter()
        micro = [micro_rows(step * accum + m) for m in range(accum)]  # global index: resume is exact
        n_global = sum(len(train_ex[i][1]) for rows in micro for i in rows)
        if list_ex is not None:  # listwise: mean over the step's examples
            n_global = sum(len(rows) for rows in micro)
        tot = torch.zeros(3, dtype=torch.float64)  # nll, tokens, correct (this rank)
        for m, chunk_rows in enumerate(micro):
            rows = chunk_rows[dist.rank * bs:(dist.rank + 1) * bs]
            torch.manual_seed(_micro_seed(cfg.seed, step * accum + m, dist.rank))
            if list_ex is None:
                nll, n, c = answer_nll(model, collate_sft([train_ex[i] for i in rows], pad_id))
            else:  # loss summed over rows; "tokens" = rows; "correct" = rows whose target ranks first
                nll, st = listwise_batch_loss(model, [list_ex[i] for i in rows], pad_id,
                                              length_norm=cfg.listwise_length_norm, tau=cfg.listwise_tau,
                                              ce_weight=cfg.listwise_ce_weight)
                n, c = len(rows), round(st["hit@1"] * len(rows))
            bad = torch.tensor([0.0 if math.isfinite(nll.item()) else 1.0])
            if dist.sum_(bad).item() > 0:
                raise TrainingError(
                    f"the loss is not finite at optimizer step {step + 1} (samples {rows}) on rank {dist.rank}",
                    where=str(run_dir), fix="lower learning_rate, and resume from the last checkpoint with --resume")
            (nll / n_global).backward()
            tot += torch.tensor([nll.item(), n, c], dtype=torch.float64)
        dist.reduce_grads(params, mean=False)  # each rank holds its share of the global loss
        gnorm = float("nan")
        if cfg.max_grad_norm:
            gnorm = float(torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm))
        optimizer.step()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dist.sum_(tot)
        last_train = {"loss": tot[0].item() / tot[1].item(), "mean_token_accuracy": tot[2].item() / tot[1].item()}
        bar.update(1)
        bar.set_postfix(loss=f"{last_train['loss']:.3f}")
        if dist.main and (step % cfg.logging_steps == 0 or step == total_steps):
            row = {"step": step, "epoch": round(step / steps_per_epoch, 4), **last_train, "grad_norm": gnorm,
                   "learning_rate": lr, "num_tokens": int(tot[1].item()),
                   "step_time": round(time.perf_counter() - t0, 3)}
            _write_jsonl(metrics_path, row)
            log.info("step %d/%d loss %.4f acc %.3f lr %.2e (%.1f s)", step, total_steps, row["loss"],
                     row["mean_token_accuracy"], lr, row["step_time"])
        epoch_end = (step * accum) // micro_per_epoch > ((step - 1) * accum) // micro_per_epoch
        if (cfg.eval_steps and step % cfg.eval_steps == 0) or (not cfg.eval_steps and epoch_end) \
                or step == total_steps:
            last_eval = run_eval()
            if dist.main and last_eval:
                log.info("step %d eval_loss %.4f", step, last_eval["eval_loss"])
        if (cfg.save_steps and step % cfg.save_steps == 0) or (not cfg.save_steps and epoch_end) \
                or step == total_steps:
            save()
    bar.close()
    seconds = time.perf_counter() - t_start
    log.info("trained %d steps in %.1f s", step, seconds)
    # ranks must hold identical weights (same init, summed gradients): record one checksum per rank
    sums = torch.zeros(dist.world, dtype=torch.float64)
    sums[dist.rank] = sum(p.detach().double().abs().sum() for p in params.values())
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
             "rank_weight_checksums": sums.tolist(),
             "seconds": round(seconds, 1)}, indent=1))
    dist.barrier()
    return TrainResult(run_dir=run_dir, steps=step, final_metrics=last_train, eval_metrics=last_eval)
