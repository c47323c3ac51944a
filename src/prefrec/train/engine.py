"""The training engine the LM trainers share: accelerator, devices, precision, run folder, loop.

A trainer (SFT, DPO/S-DPO/NAPO/RecPO) keeps only what is its own -- how a micro-batch becomes a
loss and which numbers it adds up -- and hands the rest to :func:`fit`:

* **Accelerator** (:func:`make_accelerator`): CUDA when present (``device: cpu`` forces the CPU),
  mixed precision from ``precision`` (``auto`` = what ``accelerate launch --mixed_precision`` said,
  else fp32), live trackers from ``report_to`` (tensorboard / wandb / mlflow through accelerate).
* **Collectives** go through :mod:`prefrec.distributed` on the backend's device (NCCL needs CUDA
  tensors); :class:`Dist` adds the rank-consistent decisions (every rank raises the same error).
* **Schedule** (:func:`plan_schedule`): micro-batches, accumulation, optimizer steps; stored in
  every checkpoint so ``--resume`` with another ``max_steps`` / ``num_train_epochs`` / batch is
  refused (:func:`restore_checkpoint`) instead of silently replaying a finished schedule.
* **Loop** (:func:`fit`): per optimizer step, ``accum`` micro-batches (forward under autocast,
  backward with a gradient scaler for fp16), one flat gradient all-reduce, clipping, optimizer and
  scheduler step; the learning rate logged is the one the step used; one eval/save cadence
  (``eval_steps`` / ``save_steps``, 0 = at every epoch end) and always at the last step; a tqdm bar
  on a terminal and log lines with throughput and ETA otherwise.

Why not ``accelerator.prepare(model)``: the shared-prefix scorer calls the model with a packed 4D
mask and needs PEFT's methods; the trainable gradients are a few MB of LoRA, so one explicit
all-reduce is all DDP would do -- and it keeps N processes exactly equal to one process with an N
times larger batch (tests/test_*_distributed.py). DeepSpeed / FSDP launches are refused with a
clear message (docs/gpus.md says what to use instead) rather than silently running unsharded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefrec import distributed
from prefrec.config import Config, dump_config
from prefrec.errors import ConfigError, PrefrecError

log = logging.getLogger(__name__)

__all__ = ["TrainingError", "Dist", "make_accelerator", "resolve_precision", "Schedule", "plan_schedule",
           "build_optimizer", "restore_checkpoint", "check_fresh_run", "open_run_dir", "Loop", "fit",
           "write_jsonl", "format_eta", "resume_from", "checkpoint_parts", "make_scaler"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_ACCEL_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


class TrainingError(PrefrecError):
    """Training cannot go on (non-finite loss, inconsistent resume state)."""


# ------------------------------------------------------------------------------ accelerator
def resolve_precision(precision: str, device_type: str) -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for a config value; ``auto`` reads the launcher's
    ``--mixed_precision`` (``ACCELERATE_MIXED_PRECISION``), else fp32. fp16 needs CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not one of {PRECISIONS}", where="precision",
                          fix="use fp32 (default on CPU), bf16 (GPUs from A100 on, and CPUs) or fp16 (older GPUs)")
    if precision == "auto":
        env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        precision = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "bf16"}.get(env, "fp32")
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError(f"precision=fp16 needs a CUDA GPU (this run is on {device_type})", where="precision",
                          fix="use precision=bf16 on CPU, or fp32")
    return precision


def _refuse_sharded_launch() -> None:
    kind = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and "DeepSpeed" or \
        os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and "FSDP" or None
    if kind:
        raise ConfigError(f"prefrec's LM trainers do not run under {kind} yet: every rank keeps the whole "
                          "model (LoRA gradients are all-reduced explicitly)", where="accelerate launch",
                          fix="launch with plain multi-GPU data parallelism (`accelerate launch --multi_gpu "
                              "--num_processes N ...`), and for a model that does not fit one GPU load it "
                              "in 4-bit (quantization=4bit) or bf16 (model_dtype=bfloat16); see docs/gpus.md")


def make_accelerator(cfg: Any):
    """The run's ``Accelerator``: device (``cfg.device``: auto | cpu | cuda), mixed precision
    (``cfg.precision``), trackers (``cfg.report_to``, logging into ``cfg.output_dir``). Also pins
    the collective device and the CPU thread count (``cfg.threads``)."""
    from accelerate import Accelerator

    _refuse_sharded_launch()
    want = getattr(cfg, "device", "auto") or "auto"
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA GPU", where="device",
                          fix="use device=auto (CUDA when present, else CPU) or install a CUDA build of torch")
    cpu = want == "cpu" or not torch.cuda.is_available()
    precision = resolve_precision(getattr(cfg, "precision", "auto"), "cpu" if cpu else "cuda")
    trackers = [t for t in (getattr(cfg, "report_to", None) or []) if t != "none"]
    _check_trackers(trackers)
    _allow_new_precision(_ACCEL_PRECISION[precision])
    acc = Accelerator(cpu=cpu, mixed_precision=_ACCEL_PRECISION[precision],
                      log_with=trackers or None, project_dir=str(cfg.output_dir) if trackers else None)
    acc.prefrec_precision = precision  # type: ignore[attr-defined]
    if acc.num_processes > 1:
        distributed.set_comm_device(None)  # read off the backend: gloo -> CPU, NCCL -> CUDA
    if getattr(cfg, "threads", None):
        torch.set_num_threads(cfg.threads)
    if acc.device.type == "cpu":
        from prefrec.models.lm import cpu_fast_math

        cpu_fast_math()
        if getattr(cfg, "gradient_checkpointing", False):
            # without a fixed mmap threshold glibc keeps the recomputed layers' freed buffers and
            # checkpointing saves 29 % instead of 81 % of an SFT step's peak (results_lm_speed.md §4)
            from prefrec.memory import tune_malloc

            if tune_malloc():
                log.info("gradient checkpointing on the CPU: malloc's mmap threshold fixed at 64 KiB "
                         "(lower peak memory, more system time)")
    return acc


def _allow_new_precision(mixed: str) -> None:
    """accelerate keeps one process-wide state and refuses a second precision in the same process
    (a study running an fp32 stage, then a bf16 one; notebooks). Reset the precision part of it;
    the process group (PartialState) is kept."""
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and AcceleratorState._shared_state.get("_mixed_precision", mixed) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


_TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def _check_trackers(trackers: list[str]) -> None:
    import importlib.util

    for t in trackers:
        if t not in _TRACKER_MODULES:
            raise ConfigError(f"report_to: unknown tracker {t!r}", where="report_to",
                              fix=f"use none or any of {sorted(_TRACKER_MODULES)}")
        mod = _TRACKER_MODULES[t]
        if importlib.util.find_spec(mod) is None and not (t == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            raise ConfigError(f"report_to: {t} is not installed", where="report_to",
                              fix=f"pip install {mod}" + (" (or prefrec[tensorboard])" if t == "tensorboard" else ""))


# ------------------------------------------------------------------------------ collectives
class Dist:
    """Rank facts of an accelerator plus the collectives a trainer needs (device-correct)."""

    def __init__(self, accelerator):
        self.acc = accelerator
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.main = accelerator.is_main_process
        self.device = accelerator.device

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (wherever ``t`` lives) and return it."""
        return distributed.all_reduce_sum(t)

    def any_(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any: decisions that raise stay in step."""
        return bool(self.sum_(torch.tensor([1.0 if flag else 0.0])).item() > 0)

    def barrier(self) -> None:
        if self.world > 1:
            self.acc.wait_for_everyone()

    def reduce_grads(self, params: dict[str, torch.nn.Parameter], mean: bool) -> None:
        """Sum (SFT: each rank holds its share of a globally normalised loss) or average
        (preference: each rank's loss is a mean) the trainable gradients: one flat all-reduce."""
        if self.world <= 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params.values()]
        flat = torch.cat([x.reshape(-1) for x in grads])
        self.sum_(flat)
        if mean:
            flat /= self.world
        off = 0
        for p, gr in zip(params.values(), grads):
            p.grad = flat[off:off + gr.numel()].view_as(p).clone()
            off += gr.numel()


# ------------------------------------------------------------------------------ schedule
@dataclass
class Schedule:
    """How many micro-batches and optimizer steps a run has (stored in every checkpoint)."""

    batch_size: int
    accum: int
    global_micro: int
    micro_per_epoch: int
    total_steps: int
    steps_per_epoch: float
    world: int = 1

    def key(self) -> dict[str, int]:
        """What a resumed run must share with the checkpoint for the data order to continue (a
        longer ``max_steps`` / ``num_train_epochs`` is allowed: :mod:`prefrec.rundir` re-plans the
        learning-rate schedule with a warning; a shorter one than the checkpoint is refused)."""
        return {"per_device_train_batch_size": self.batch_size, "gradient_accumulation_steps": self.accum,
                "processes": self.world}


def plan_schedule(cfg: Any, n_train: int, world: int) -> Schedule:
    bs, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    global_micro = bs * world
    micro_per_epoch = math.ceil(n_train / global_micro)
    if cfg.max_steps > 0:
        total_steps = cfg.max_steps
    else:
        total_steps = max(1, math.ceil(cfg.num_train_epochs * micro_per_epoch / accum))
    return Schedule(bs, accum, global_micro, micro_per_epoch, total_steps, micro_per_epoch / accum, world)


def build_optimizer(params: dict[str, torch.nn.Parameter], cfg: Any, total_steps: int):
    """AdamW + the HF learning-rate schedule named by ``cfg.lr_scheduler_type``.

    HF's warm-up gives step 1 the rate ``0 / warmup`` -- a wasted step. Here warm-up step ``s``
    (0-based) uses the schedule's value at ``s + 1``, so step 1 trains at ``lr / warmup`` and the
    last warm-up step at the full rate; after warm-up the schedule is HF's, unchanged."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2))
    warmup = int(round(cfg.warmup_ratio * total_steps))
    hf = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    if warmup == 0:
        return optimizer, hf
    base = hf.lr_lambdas[0]
    for g in optimizer.param_groups:  # undo HF's step-0 rate; LambdaLR re-applies the shifted one
        g["lr"] = g["initial_lr"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: base(s + 1) if s < warmup else base(s))
    return optimizer, scheduler


def restore_checkpoint(start: Path, params: dict, optimizer, scheduler, schedule: Schedule | None = None,
                       scaler=None) -> tuple[dict, int]:
    """Load a trainer checkpoint into ``params``, ``optimizer``, ``scheduler`` (and the fp16
    scaler) and torch's RNG; return its state dict and step. A checkpoint written with another
    batch, accumulation or number of processes is refused: the resumed run would see another
    order of examples than the interrupted one."""
    from prefrec.checkpoint import load_checkpoint

    parts, state = load_checkpoint(start)
    if schedule is not None and "schedule" in state and state["schedule"] != schedule.key():
        old, new = state["schedule"], schedule.key()
        diff = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                         if old.get(k) != new.get(k))
        raise ConfigError(f"--resume with another training schedule ({diff})", where=str(start),
                          fix="resume with the original batch settings and number of processes, or start a "
                              "new run (--overwrite or another output_dir) from this run's final model")
    missing = set(params) - set(parts["model"])
    if missing:
        raise TrainingError(f"checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]})",
                            where=str(start), fix="resume with the same use_peft/lora_* settings")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(parts["model"][n].to(p.device, p.dtype))
    optimizer.load_state_dict(parts["optimizer"])
    scheduler.load_state_dict(parts["scheduler"])
    if scaler is not None and "scaler" in parts:
        scaler.load_state_dict(parts["scaler"])
    if "rng" in parts and "torch" in parts["rng"]:
        torch.set_rng_state(parts["rng"]["torch"])
    return state, int(state["step"])


# ------------------------------------------------------------------------------ run folder
def check_fresh_run(run_dir: Path, resume: bool, config: dict) -> Path | None:
    """The newest checkpoint to resume from (``None`` = start afresh), after
    :func:`prefrec.rundir.check_start`: a fresh run refuses a folder holding another run, a resume
    refuses a changed config. Every rank calls this and reaches the same decision, so a refused run
    stops on all ranks instead of leaving them waiting."""
    from prefrec.checkpoint import latest_checkpoint
    from prefrec.rundir import check_start

    ckpt_root = run_dir / "checkpoints"
    start = latest_checkpoint(ckpt_root) if resume else None
    if resume and start is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", ckpt_root)
    check_start(run_dir, config, resume=resume, kind="lm")
    return start


def resume_from(ckpt_root: Path, params: dict, optimizer, scheduler, schedule: Schedule, scaler=None
                ) -> tuple[Path, dict, int]:
    """Restore the newest checkpoint that loads (a corrupt newest one falls back to an older one,
    :func:`prefrec.rundir.restore_newest`); refuse one past the planned total."""
    from prefrec.rundir import check_resumed_step, restore_newest

    found = restore_newest(ckpt_root, lambda ck: restore_checkpoint(ck, params, optimizer, scheduler, schedule, scaler))
    if found is None:
        raise TrainingError("the checkpoint disappeared while the run started", where=str(ckpt_root),
                            fix="resume again, or start afresh with --overwrite")
    start, (state, step) = found
    check_resumed_step(step, schedule.total_steps)
    return start, state, step


def open_run_dir(cfg: Config, run_dir: Path, metrics_path: Path, dist: Dist, resumed_step: int | None) -> None:
    """Rank 0 writes ``config.yaml`` and starts ``metrics.jsonl`` afresh, or, on resume, drops the
    rows logged after the checkpoint (they will be logged again); every rank waits for it."""
    from prefrec.rundir import keep_rows

    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        keep_rows(metrics_path, lambda r: resumed_step is not None and r.get("step", 0) <= resumed_step)
        dump_config(cfg, run_dir / "config.yaml")
    dist.barrier()


def write_jsonl(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def format_eta(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ------------------------------------------------------------------------------ the loop
@dataclass
class Loop:
    """What :func:`fit` needs from a trainer.

    ``micro(g, rows)`` runs micro-batch ``g`` (global index: resume is exact) over this rank's
    ``rows`` and returns ``(loss to backward, additive stats)``; the loss already carries the
    trainer's normalisation (SFT: global token count; preference: 1/accum), and the optional stat
    ``loss_value`` is the unnormalised value named in a non-finite-loss error. ``summarize`` turns
    the stats summed over micro-batches and ranks into logged metrics (it must return ``loss``).
    ``evaluate(step)`` / ``save(step, last_train, last_eval)`` run at the shared cadence (the
    checkpoint records the last metrics, so finishing a resumed run twice keeps them); ``grad_mean`` says whether
    rank gradients are averaged (True) or summed.
    """

    name: str
    acc: Any
    dist: Dist
    cfg: Any
    schedule: Schedule
    params: dict[str, torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    rows_of: Callable[[int], list[int]]
    micro: Callable[[int, list[int]], tuple[torch.Tensor, dict[str, float]]]
    summarize: Callable[[dict[str, float]], dict[str, float]]
    evaluate: Callable[[int], dict[str, float]]
    save: Callable[[int, dict[str, float], dict[str, float]], None]
    metrics_path: Path
    grad_mean: bool = True
    scaler: Any = None
    log_keys: tuple[str, ...] = ()
    where: str = ""


def make_scaler(acc) -> Any:
    """A gradient scaler for fp16 mixed precision (bf16 and fp32 need none)."""
    if getattr(acc, "prefrec_precision", "fp32") != "fp16":
        return None
    return torch.amp.GradScaler("cuda")


def fit(loop: Loop, step: int, last_train: dict[str, float] | None = None,
        last_eval: dict[str, float] | None = None) -> tuple[int, dict[str, float], dict[str, float], float]:
    """Train from ``step`` to the schedule's end; returns (step, last train metrics, last eval
    metrics, training seconds). ``last_*`` are a resumed checkpoint's metrics."""
    from tqdm.auto import tqdm

    cfg, dist, sched, acc = loop.cfg, loop.dist, loop.schedule, loop.acc
    total, accum = sched.total_steps, sched.accum
    last_train = dict(last_train or {})
    last_eval = dict(last_eval or {})
    t_start = time.perf_counter()
    first = step
    bar = tqdm(total=total, initial=step, desc=loop.name, unit="step", dynamic_ncols=True,
               disable=not (dist.main and sys.stderr.isatty()))
    params = list(loop.params.values())
    while step < total:
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        epoch_of_step = (step * accum) // sched.micro_per_epoch
        for m in range(accum):
            g = step * accum + m
            rows = loop.rows_of(g)
            with acc.autocast():
                loss, stats = loop.micro(g, rows)
            value = float(stats.get("loss_value", loss.detach().float().item()))
            if dist.any_(not math.isfinite(value)):
                raise TrainingError(
                    f"the loss is not finite ({value}) at optimizer step {step + 1}, epoch {g // sched.micro_per_epoch}, "
                    f"micro-batch {g % sched.micro_per_epoch} (samples {rows}) on rank {dist.rank}",
                    where=loop.where, fix="lower learning_rate (or beta), use precision=fp32 if it happened "
                                          "under bf16/fp16, and resume from the last checkpoint with --resume")
            (loop.scaler.scale(loss) if loop.scaler is not None else loss).backward()
            for k, v in stats.items():
                if k != "loss_value":
                    sums[k] = sums.get(k, 0.0) + float(v)
        dist.reduce_grads(loop.params, mean=loop.grad_mean)
        if loop.scaler is not None:
            loop.scaler.unscale_(loop.optimizer)
        gnorm = float("nan")
        if cfg.max_grad_norm:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        lr = loop.scheduler.get_last_lr()[0]  # the rate this step uses
        if loop.scaler is not None:
            loop.scaler.step(loop.optimizer)
            loop.scaler.update()
        else:
            loop.optimizer.step()
        loop.scheduler.step()
        loop.optimizer.zero_grad(set_to_none=True)
        step += 1
        keys = sorted(sums)
        vec = dist.sum_(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
        last_train = loop.summarize(dict(zip(keys, vec.tolist())))
        dt = time.perf_counter() - t0
        elapsed = time.perf_counter() - t_start
        eta = elapsed / (step - first) * (total - step)
        bar.update(1)
        bar.set_postfix(loss=f"{last_train['loss']:.3f}")
        if dist.main and (step % cfg.logging_steps == 0 or step == total):
            row = {"step": step, "epoch": round(step / sched.steps_per_epoch, 4), **last_train, "grad_norm": gnorm,
                   "learning_rate": lr, "step_time": round(dt, 3)}
            write_jsonl(loop.metrics_path, row)
            if acc.trackers:
                acc.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
            shown = " ".join(f"{k.split('/')[-1]} {last_train[k]:.3f}" for k in loop.log_keys if k in last_train)
            log.info("%s step %d/%d loss %.4f %s lr %.2e (%.1f s/step, ETA %s)", loop.name, step, total,
                     last_train["loss"], shown, lr, dt, format_eta(eta))
        epoch_end = (step * accum) // sched.micro_per_epoch > epoch_of_step
        if (cfg.eval_steps and step % cfg.eval_steps == 0) or (not cfg.eval_steps and epoch_end) or step == total:
            with acc.autocast():
                last_eval = loop.evaluate(step)
            if dist.main and last_eval:
                if acc.trackers:
                    acc.log(last_eval, step=step)
                log.info("%s step %d %s", loop.name, step,
                         " ".join(f"{k} {v:.4f}" for k, v in last_eval.items() if k in ("eval_loss", "eval_rewards/accuracies", "eval_mean_token_accuracy")))
        if (cfg.save_steps and step % cfg.save_steps == 0) or (not cfg.save_steps and epoch_end) or step == total:
            loop.save(step, last_train, last_eval)
            dist.barrier()
    bar.close()
    seconds = time.perf_counter() - t_start
    log.info("%s: trained %d steps in %.1f s", loop.name, step - first, seconds)
    return step, last_train, last_eval, seconds


def checkpoint_parts(loop_params: dict[str, torch.nn.Parameter], optimizer, scheduler, scaler=None) -> dict:
    """The tensors a checkpoint holds (trainable weights, optimizer, scheduler, RNG, fp16 scaler)."""
    parts = {"model": {n: p.detach() for n, p in loop_params.items()}, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()}}
    if scaler is not None:
        parts["scaler"] = scaler.state_dict()
    return parts
