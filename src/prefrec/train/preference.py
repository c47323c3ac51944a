"""Preference training of an LM recommender: DPO, Softmax-DPO, or any ranking loss over rewards.

Per example: prompt x, chosen item y_w (the true next item), K negatives drawn from the other
candidates; implicit reward ``r(y) = beta * (log pi_theta(y|x) - log pi_ref(y|x))`` (summed
over the answer tokens + EOS). S-DPO (Chen et al., NeurIPS 2024) minimises
``softplus(logsumexp_k(r_k - r_w))``; K = 1 is DPO. Any :func:`prefrec.losses.make_loss` name
works over the same rewards (``loss: psl`` + ``loss_kwargs``), and :class:`Objective` is the
hook NAPO / RecPO plug into (they need extra per-example data and margins, not another loop).

Why this is several times faster than the peer trainer (``research/lm_side.md`` §1.5):

* the policy scores the 1+K answers of an example behind ONE copy of its prompt
  (:func:`prefrec.lm.scoring.candidate_logps`), not 1+K concatenations;
* the reference is never run during training: log pi_ref of all candidates of every example is
  computed once (same fast path, no grad) and cached on disk (:mod:`prefrec.lm.ref_cache`). So
  negatives are re-sampled every epoch for free, and no reference copy sits in memory.

Reference model. The starting point is an SFT run. When SFT trained a LoRA adapter, it is
MERGED into the base weights and a FRESH LoRA is added for preference training (rather than
continuing the SFT adapter, as the peer does). Why: the reference must be exactly the SFT
model; with a merged base, "adapters disabled" *is* the SFT model (with a continued adapter
disabling it would give the pre-SFT base, so the peer keeps a second model copy), and with a
fresh adapter (B = 0) policy == reference at step 0, so the first loss is exactly log(1+K).
Since the reference values come from the cache, full fine-tuning (``use_peft: false``) needs no
copy either.

Distributed (``accelerate launch --multi_gpu --num_processes N -m prefrec.cli sdpo ...``, or
``torchrun --nproc_per_node N -m prefrec.cli ...``; on a CPU-only machine both run N gloo
processes. NOT ``accelerate launch --cpu --num_processes N``: accelerate 1.16 then starts ONE
process unless given an mpirun hostfile): every rank holds the model, the
global batch is split over ranks, and the trainable gradients are averaged with ONE flat
all-reduce per optimizer step. We do not wrap the model in DDP: the scoring function calls the
model with a packed 4D mask and needs the PEFT wrapper's methods, and one all-reduce of the
LoRA gradients (a few MB) is all DDP would do here. The reference cache is computed in shards
(row i on rank i % N), summed, and written by rank 0.

Outputs in ``output_dir``: ``config.yaml``, ``metrics.jsonl`` (TRL names: ``loss``,
``rewards/chosen``, ``rewards/rejected`` (mean over K), ``rewards/margins``,
``rewards/accuracies`` (chosen beats ALL rejected), ``logps/chosen``, ``logps/rejected``, and
``eval_*`` for validation), ``checkpoints/step-*`` (atomic safetensors; ``--resume``),
``final/`` (loadable with :func:`prefrec.models.lm.load_trained_lm`), ``plots/*.png``.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from prefrec.config import Config, config_hash
from prefrec.errors import ConfigError, DataError
from prefrec.lm.napo import NapoConfig
from prefrec.lm.recpo import RecpoConfig
from prefrec.lm.styles import PromptConfig
from prefrec.rundir import finished_summary, holds_run_dir, read_jsonl
from prefrec.train.engine import (
    Dist,
    Loop,
    TrainingError,
    build_optimizer,
    check_fresh_run,
    checkpoint_parts,
    fit,
    make_accelerator,
    make_scaler,
    open_run_dir,
    plan_schedule,
    resume_from,
    write_jsonl,
)

log = logging.getLogger(__name__)

__all__ = ["PreferenceConfig", "TrainingError", "Objective", "RewardLoss", "PreferenceBatch",
           "sample_negatives", "preference_step", "train_preference", "reward_stats"]

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LMTrainConfig(Config):
    """Knobs every LM trainer has (SFT and preference), named after TRL's configs. Each trainer
    subclasses it and sets its own defaults where they differ."""

    output_dir: str = "runs/lm"
    model: str = Field("smollm2-135m", description="model name, HF id, saved folder, trained run dir, or 'tiny'")
    dataset: str = "ml-100k"
    data_dir: str | None = None
    train_split: str = "train"
    eval_split: str = Field("val", description="ml-100k and llara-lastfm name it 'val'")
    train_limit: int | None = Field(200, ge=1)
    eval_limit: int | None = Field(50, ge=0, description="0 = no validation")
    seed: int = Field(0, description="data split + candidates + training; evaluate-lm and baseline default to 0 too")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="prompt domain / template file / "
                                 "chat template; recorded in final/ for evaluate-lm and recommend")

    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = 0.3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    per_device_train_batch_size: int = Field(4, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="optimizer steps; > 0 overrides num_train_epochs")

    use_peft: bool = True
    lora_r: int = Field(8, ge=1)
    lora_alpha: float = 32
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(LLAMA_PROJECTIONS))
    gradient_checkpointing: bool = False

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present, else CPU")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="mixed precision of the forward pass; auto = accelerate launch's "
        "--mixed_precision, else fp32. fp16 needs CUDA")
    model_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the weights are loaded in (auto = the checkpoint's); LoRA weights stay fp32")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="attention kernel; flash_attention_2 (needs flash-attn and a GPU) only for sft: "
        "shared-prefix scoring needs a 4D mask")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="load the base model quantized with bitsandbytes (QLoRA); needs a CUDA GPU")
    report_to: list[Literal["none", "tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["none"], description="live trackers through accelerate (logs in output_dir)")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, v: Any) -> Any:
        return [x.strip() for x in v.split(",")] if isinstance(v, str) else v

    logging_steps: int = Field(1, ge=1)
    eval_steps: int = Field(0, ge=0, description="0 = at the end of every epoch and of training")
    save_steps: int = Field(0, ge=0, description="0 = at the end of every epoch and of training")
    save_total_limit: int = Field(2, ge=1)
    save_final_model: bool = True
    plots: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's); 1 is "
                                "several times faster on a CPU shared with other jobs")


class PreferenceConfig(LMTrainConfig):
    """``prefrec dpo`` / ``prefrec sdpo``. Knob names follow TRL's DPOConfig where one exists."""

    output_dir: str = "runs/sdpo"
    model: str = Field("smollm2-135m", description="SFT run dir, saved model folder, model name, or 'tiny'")

    loss: str = Field("sdpo", description="sdpo | dpo | napo | recpo | any prefrec.losses name (psl, bpr, sl, bsl)")
    loss_kwargs: dict[str, Any] = Field(default_factory=dict)
    napo: NapoConfig = Field(default_factory=NapoConfig, description="used when loss: napo")
    recpo: RecpoConfig = Field(default_factory=RecpoConfig, description="used when loss: recpo")
    beta: float = Field(1.0, description="reward scale; must be > 0")
    num_negatives: int = Field(3, ge=1, description="K; 1 = DPO")
    resample_negatives: bool = Field(True, description="new negatives each epoch (false = fixed once, as the peer)")
    reference_free: bool = Field(False, description="rewards = beta * log pi (NAPO/SimPO style); no cache")
    scoring_chunk: int | None = Field(None, ge=1, description="candidates packed behind one prompt copy")

    ref_cache_dir: str | None = Field(None, description="folder of reference caches (default: <output_dir>/../.ref_cache)")
    ref_cache: str | None = Field(None, description="explicit cache file; must match model+data+tokenizer")
    ref_batch_size: int = Field(4, ge=1)
    final_model: Literal["auto", "merged", "adapter"] = Field(
        "auto", description="final/: merged full model, or the LoRA adapter over `model` (auto: adapter from 1B params)")


def validate_config(cfg: PreferenceConfig) -> None:
    """Checks pydantic cannot express alone; every message names the key and the fix."""
    from prefrec.losses import LOSS_NAMES, make_loss

    if not (cfg.beta > 0 and math.isfinite(cfg.beta)):
        raise ConfigError(f"beta={cfg.beta} must be a finite number > 0 (it scales the rewards; "
                          "beta <= 0 flips or removes the preference)", where="beta",
                          fix="use beta: 1.0 (S-DPO default) or 0.1 (TRL default)")
    if cfg.loss == "dpo" and cfg.num_negatives != 1:
        raise ConfigError(f"loss 'dpo' takes one negative, num_negatives={cfg.num_negatives}",
                          where="num_negatives", fix="set num_negatives: 1, or loss: sdpo for K > 1")
    if cfg.loss in OBJECTIVE_LOSSES:
        if cfg.loss_kwargs:
            raise ConfigError(f"loss {cfg.loss!r} takes its options from the {cfg.loss}: section, "
                              f"not loss_kwargs ({sorted(cfg.loss_kwargs)})", where="loss_kwargs",
                              fix=f"move them under {cfg.loss}: (e.g. {cfg.loss}.{next(iter(cfg.loss_kwargs))})")
        return
    if cfg.loss not in LOSS_NAMES:
        make_loss(cfg.loss, **cfg.loss_kwargs)  # raises with a did-you-mean
    try:
        make_loss(cfg.loss, **cfg.loss_kwargs)
    except TypeError as e:
        raise ConfigError(f"bad loss_kwargs for {cfg.loss!r}: {e}", where="loss_kwargs",
                          fix="see prefrec.losses for each loss's hyperparameters") from e
    if cfg.reference_free and cfg.ref_cache:
        raise ConfigError("reference_free is on but ref_cache is set", where="ref_cache",
                          fix="remove one of them")


# ----------------------------------------------------------------------------------- objective
@dataclass
class PreferenceBatch:
    """What an objective sees for one micro-batch.

    ``policy`` / ``reference``: (B, 1+K) summed answer log-probs, column 0 = chosen.
    ``rows``: indices into ``samples``; ``cols``: (B, 1+K) candidate indices of each column.
    NAPO / RecPO objectives read per-candidate data (``samples[i].extra``, ``item_ids``) by
    ``rows``/``cols``.
    """

    policy: torch.Tensor
    reference: torch.Tensor
    rows: list[int]
    cols: torch.Tensor
    samples: Sequence[Any]
    beta: float


class Objective:
    """Maps a :class:`PreferenceBatch` to ``(loss, per_row, extra_metrics)``.

    The default :class:`RewardLoss` covers DPO, S-DPO and every CF ranking loss; NAPO (shared
    negatives + dynamic margin, :mod:`prefrec.lm.napo`) and RecPO (per-negative margin) become
    subclasses selected by ``loss`` name, with their state saved via ``state_dict``.
    """

    def __call__(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class RewardLoss(Objective):
    """``make_loss(name, **kwargs)(r_w, r_neg)`` over implicit rewards ``beta * (pi - ref)``."""

    def __init__(self, name: str, **kwargs: Any):
        from prefrec.losses import make_loss

        self.name = name
        self.fn = make_loss(name, **kwargs)

    def __call__(self, batch: PreferenceBatch):
        r = batch.beta * (batch.policy - batch.reference)
        per_row = self.fn(r[:, 0], r[:, 1:])
        return per_row.mean(), per_row, {}


OBJECTIVE_LOSSES = ("napo", "recpo")  # losses with their own objective and config section


def build_objective(cfg: PreferenceConfig, world_size: int = 1) -> Objective:
    """The objective for ``cfg.loss``: NAPO / RecPO from their sections, else a reward loss.

    Built before any model is loaded, so a bad ``napo:``/``recpo:`` value fails in a second.
    ``world_size`` matters for NAPO: sharing needs >= 2 examples per GLOBAL batch.
    """
    if cfg.loss == "napo":
        from prefrec.lm.napo import napo_objective

        return napo_objective(cfg, world_size)
    if cfg.loss == "recpo":
        from prefrec.lm.recpo import recpo_objective

        return recpo_objective(cfg)
    return RewardLoss(cfg.loss, **cfg.loss_kwargs)


def reward_stats(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> dict[str, float]:
    """TRL's preference metrics for one batch (detached, means over rows)."""
    with torch.no_grad():
        r = beta * (policy.detach() - reference.detach())
        chosen, rejected = r[:, 0], r[:, 1:]
        return {
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margins": (chosen - rejected.mean(1)).mean().item(),
            "rewards/accuracies": (chosen > rejected.max(1).values).float().mean().item(),
            "logps/chosen": policy[:, 0].detach().mean().item(),
            "logps/rejected": policy[:, 1:].detach().mean().item(),
        }


def preference_step(model, tokenizer, samples: Sequence[Any], rows: Sequence[int], cols: torch.Tensor,
                    reference: torch.Tensor, objective: Objective, beta: float, *,
                    chunk: int | None = None, grad: bool = True
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss and metrics of one micro-batch: policy scored with the shared-prefix fast path,
    reference read from the cache (``reference`` (B, 1+K), aligned with ``cols``)."""
    from prefrec.lm.scoring import candidate_logps

    prompts = [samples[i].prompt for i in rows]
    cands = [[samples[i].candidates[j] for j in c] for i, c in zip(rows, cols.tolist())]
    policy = candidate_logps(model, tokenizer, prompts, cands, grad=grad, chunk=chunk)
    reference = reference.to(policy.device, policy.dtype)
    batch = PreferenceBatch(policy=policy, reference=reference, rows=list(rows), cols=cols,
                            samples=samples, beta=beta)
    loss, _, extra = objective(batch)
    stats = reward_stats(policy, reference, beta)
    stats["loss"] = loss.item()
    stats.update(extra)
    return loss, stats


# ----------------------------------------------------------------------------------- data
def check_negatives(samples: Sequence[Any], k: int, where: str) -> None:
    """K must fit every sample's negatives (checked before any model is loaded)."""
    if not samples:
        raise DataError("no samples", where=where, fix="check the dataset, split and *_limit settings")
    for i, s in enumerate(samples):
        avail = len(s.candidates) - 1
        if k > avail:
            raise ConfigError(
                f"num_negatives={k} but sample {i} has only {avail} non-target candidates",
                where="num_negatives", fix=f"use num_negatives <= {avail}")
        if not 0 <= s.target_index < len(s.candidates):
            raise DataError(f"sample {i}: target_index {s.target_index} outside its "
                            f"{len(s.candidates)} candidates", where=where, fix="fix the sample builder")


def check_samples(samples: Sequence[Any], k: int, tokenizer, where: str) -> None:
    """K must fit every sample's negatives, and every title must tokenize to something."""
    from prefrec.lm.tokens import encode_answer

    check_negatives(samples, k, where)
    seen: set[str] = set()
    for i, s in enumerate(samples):
        for t in s.candidates:
            if t not in seen:
                seen.add(t)
                try:
                    encode_answer(tokenizer, t)
                except DataError as e:
                    raise DataError(f"sample {i}: candidate title {t!r} tokenizes to nothing", where=where,
                                    fix="give every item a non-empty title (check the catalog)") from e


def sample_negatives(samples: Sequence[Any], k: int, seed: int, epoch: int, resample: bool) -> torch.Tensor:
    """(N, 1+K) candidate columns: target first, then K distinct non-targets drawn uniformly.

    A pure function of (seed, epoch) so a resumed run draws the same negatives;
    ``resample=False`` uses epoch 0's draw for every epoch (the peer's behaviour).
    """
    rng = random.Random(f"{seed}:{epoch if resample else 0}")
    out = torch.empty((len(samples), 1 + k), dtype=torch.long)
    for i, s in enumerate(samples):
        others = [j for j in range(len(s.candidates)) if j != s.target_index]
        out[i, 0] = s.target_index
        out[i, 1:] = torch.tensor(rng.sample(others, k))
    return out


def _epoch_order(n: int, seed: int, epoch: int, size: int) -> list[int]:
    """A permutation of range(n), wrapped around to a multiple of ``size`` (every rank gets
    full micro-batches, like DistributedSampler's padding)."""
    rng = random.Random(f"order:{seed}:{epoch}")
    order = list(range(n))
    rng.shuffle(order)
    pad = (-n) % size
    return order + order[:pad]


def load_samples(cfg: PreferenceConfig, split: str, limit: int | None, seed: int):
    """Prompted samples of ``split``; RecPO's TRAINING samples are its own follow-sequence
    cases (preference scores in ``extra``), rendered with the same template as S-DPO's."""
    from prefrec.lm.prompts import lm_samples

    if cfg.loss == "recpo" and split == cfg.train_split:
        return recpo_samples(cfg, limit, seed)
    return lm_samples(cfg.dataset, split, data_dir=cfg.data_dir, limit=limit, seed=seed, prompt=cfg.prompt)


def recpo_samples(cfg: PreferenceConfig, limit: int | None, seed: int) -> list:
    """RecPO training samples for ``cfg.dataset`` (needs ratings and timestamps, else a
    :class:`DataError` naming the dataset). Converted exactly as :func:`lm_samples` converts
    S-DPO cases (domain, template seed, title cleaning), so only the candidates differ; cases
    whose candidates share a title are skipped, as there."""
    from prefrec.data.registry import load_dataset
    from prefrec.lm import prompts
    from prefrec.lm.recpo import recpo_lm_samples, recpo_splits

    ds = load_dataset(cfg.dataset, cfg.data_dir)
    sec = cfg.recpo
    sp = recpo_splits(ds, seed=seed, max_history=sec.max_history, min_history=sec.min_history,
                      decay=sec.decay, max_follow=sec.max_follow, max_cases=sec.max_cases,
                      min_chosen_rating=sec.min_chosen_rating)
    dom = prompts.style_for(cfg.dataset, cfg.prompt)
    title_fn = prompts.movie_title if cfg.dataset in ("ml-100k", "ml100k", "movielens") else None

    def to_sample(case):
        return prompts.sample_from_case(case, ds.catalog, domain=dom, seed=seed, title_fn=title_fn)

    cases = sp["train"]
    out = []
    for i in prompts._subsample(len(cases), limit, seed):
        try:
            out.extend(recpo_lm_samples([cases[i]], to_sample))
        except DataError as e:
            if "appears twice" not in e.what:
                raise
    return out


# ----------------------------------------------------------------------------------- model
def load_options(cfg: LMTrainConfig, device: torch.device | None = None):
    """How ``cfg`` wants weights loaded (dtype, attention kernel, quantization, device)."""
    from prefrec.models.lm import LoadOptions

    return LoadOptions(dtype=getattr(cfg, "model_dtype", "float32"),
                       attn_implementation=getattr(cfg, "attn_implementation", "sdpa"),
                       quantization=getattr(cfg, "quantization", "none"),
                       device=None if device is None else str(device))


def load_reference_model(cfg: LMTrainConfig, device: torch.device | None = None):
    """The SFT model as a plain causal LM (LoRA merged) + tokenizer: this IS the reference.
    Loaded as ``cfg`` says (:func:`load_options`); the caller moves it to its device."""
    from prefrec.models.lm import META_FILE, load_lm, load_trained_lm, tiny_lm

    opts = load_options(cfg, device)
    if cfg.model == "tiny":
        model, tok = tiny_lm(seed=cfg.seed, initializer_range=0.3, attn_implementation=opts.attn_implementation)
        return model, tok
    p = Path(cfg.model).expanduser()
    if not p.exists() and len(p.parts) > 1 and (p.parts[0] == "runs" or Path(p.parts[0]).is_dir()):
        # "runs/ml100k_sft" would otherwise be taken for a hub id (org/name) and downloaded
        raise ConfigError(f"model {cfg.model!r}: no such run directory", where="model",
                          fix="run SFT first (prefrec sft --config configs/ml100k_sft.yaml writes "
                              "<output_dir>/final/), or point model at an existing run / saved folder")
    run_like = (p / "final").is_dir() or (p / "checkpoints").is_dir() or (p / META_FILE).exists()
    if p.is_dir() and run_like:  # load_trained_lm says "run SFT until it finishes" if final/ is missing
        model, tok = load_trained_lm(p, options=opts)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return model, tok
    return load_lm(cfg.model, options=opts)


def attach_trainable(model, cfg: PreferenceConfig):
    """Fresh LoRA (B = 0, so policy == reference at step 0) or full fine-tuning."""
    if cfg.quantization != "none" and not cfg.use_peft:
        raise ConfigError(f"quantization={cfg.quantization} with use_peft=false: quantized weights cannot be "
                          "trained directly", where="quantization", fix="set use_peft=true (QLoRA) or quantization=none")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    if cfg.use_peft:
        from prefrec.models.lm import apply_lora

        if cfg.quantization != "none":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
        model = apply_lora(model, {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                                   "target_modules": cfg.lora_target_modules})
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def _trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def setup_training(model, cfg, n_train: int, world: int, device: torch.device | None = None,
                   keep_only=None):
    """Trainable model (LoRA or full) on ``device``, its parameters, the step schedule, AdamW and
    the LR scheduler -- the part of a run that is the same for SFT and preference training.
    ``keep_only(model)`` (SFT's ``train_top_layers``) freezes all but the names it returns."""
    model = attach_trainable(model, cfg)
    if device is not None and not _placed_by_loader(model):
        model.to(device)
    model.train()
    if keep_only is not None:
        keep_only(model)
    params = _trainable(model)
    if not params:
        raise ConfigError("the model has no trainable parameters", where="use_peft/lora_target_modules",
                          fix="check lora_target_modules names against the model's modules")
    sched = plan_schedule(cfg, n_train, world)
    optimizer, scheduler = build_optimizer(params, cfg, sched.total_steps)
    return model, params, sched, optimizer, scheduler


def _placed_by_loader(model) -> bool:
    """Quantized models are put on their device by the loader (``device_map``) and cannot move."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(inner, "is_quantized", False) or getattr(inner, "hf_device_map", None))


def model_to(model, device: torch.device):
    """``model`` on ``device`` unless its loader placed it (quantized weights)."""
    return model if _placed_by_loader(model) else model.to(device)


# ----------------------------------------------------------------------------------- helpers
def _check_launch(dist: Dist, loss: str) -> None:
    """``accelerate launch --cpu --num_processes N`` (accelerate 1.x) starts ONE process (its simple
    launcher ignores N without mpirun) yet sets MASTER_PORT: say so rather than train alone."""
    import os

    if dist.world == 1 and os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" \
            and "MASTER_PORT" in os.environ:
        cmd = loss if loss in ("dpo", "napo", "recpo") else "sdpo"
        log.warning("accelerate launch --cpu started a single process (its --cpu launcher ignores "
                    "--num_processes); for N CPU processes use `accelerate launch --multi_gpu "
                    "--num_processes N -m prefrec.cli %s ...` (works without GPUs) or `torchrun "
                    "--nproc_per_node N -m prefrec.cli %s ...`", cmd, cmd)


def make_plots(run_dir: str | Path) -> list[Path]:
    """Validation loss and preferred-item reward over steps -> ``plots/*.png`` (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    train = [r for r in rows if "loss" in r]
    ev = [r for r in rows if "eval_loss" in r]
    paths = []
    specs = [("loss.png", "loss", [("loss", train, "train loss"), ("eval_loss", ev, "validation loss")]),
             ("rewards.png", "reward (beta * log-ratio)",
              [("rewards/chosen", train, "train: preferred item"), ("rewards/rejected", train, "train: negatives"),
               ("eval_rewards/chosen", ev, "validation: preferred item"),
               ("eval_rewards/rejected", ev, "validation: negatives")])]
    for fname, ylabel, series in specs:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for key, data, label in series:
            pts = [(r["step"], r[key]) for r in data if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, ms=3, label=label,
                        alpha=0.5 if not key.startswith("eval") else 1.0)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{run_dir.name}: {ylabel}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------- trainer
@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)


def evaluate_loss(model, tokenizer, samples, cols, ref, objective, beta, dist: Dist, batch_size: int,
                  chunk: int | None = None) -> dict[str, float]:
    """Validation loss and reward metrics over fixed negatives, sharded over ranks, no grad."""
    was = model.training
    model.eval()
    keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected"]
    tot = torch.zeros(len(keys) + 1, dtype=torch.float64)
    mine = list(range(dist.rank, len(samples), dist.world))
    try:
        with torch.no_grad():
            for s in range(0, len(mine), batch_size):
                rows = mine[s:s + batch_size]
                c = cols[rows]
                loss, st = preference_step(model, tokenizer, samples, rows, c, ref[rows], objective, beta,
                                           chunk=chunk, grad=False)
                n = len(rows)
                for j, k in enumerate(keys):
                    tot[j] += st[k] * n
                tot[-1] += n
    finally:
        model.train(was)
    dist.sum_(tot)
    n = max(tot[-1].item(), 1.0)
    return {f"eval_{k}": tot[j].item() / n for j, k in enumerate(keys)}


@holds_run_dir(lambda cfg, **_: cfg.output_dir)  # one process per run folder, for the run's life
def train_preference(cfg: PreferenceConfig, *, resume: bool = False, model=None, tokenizer=None,
                     train_samples: Sequence[Any] | None = None, eval_samples: Sequence[Any] | None = None,
                     objective: Objective | None = None) -> TrainResult:
    """Run (or resume) a preference-training run; see the module docstring.

    ``model``/``tokenizer`` (a plain causal LM = the reference) and ``train_samples`` /
    ``eval_samples`` may be given directly (tests, notebooks); otherwise they come from
    ``cfg.model`` and ``cfg.dataset``.
    """
    from prefrec.checkpoint import save_checkpoint
    from prefrec.lm import ref_cache as rc

    validate_config(cfg)
    acc = make_accelerator(cfg)
    dist = Dist(acc)
    _check_launch(dist, cfg.loss)
    if cfg.attn_implementation == "flash_attention_2":
        raise ConfigError("attn_implementation=flash_attention_2 cannot take the packed 4D mask of "
                          "shared-prefix scoring", where="attn_implementation",
                          fix="use sdpa (default; flash kernels through PyTorch where the mask allows) or eager")
    run_dir = Path(cfg.output_dir)
    ckpt_root = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.jsonl"
    start = check_fresh_run(run_dir, resume, cfg.model_dump(mode="json"))  # every rank decides the same
    dist.barrier()  # no rank writes before all have checked the folder
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # config and data errors surface before the (slow) model load
    objective = objective or build_objective(cfg, dist.world)

    # --- data, then model (= reference)
    if train_samples is None:
        train_samples = load_samples(cfg, cfg.train_split, cfg.train_limit, cfg.seed)
    if eval_samples is None:
        eval_samples = load_samples(cfg, cfg.eval_split, cfg.eval_limit, cfg.seed) if cfg.eval_limit != 0 else []
    k = cfg.num_negatives
    check_negatives(train_samples, k, where=f"{cfg.dataset}:{cfg.train_split}")
    if eval_samples:
        check_negatives(eval_samples, k, where=f"{cfg.dataset}:{cfg.eval_split}")
    if model is None:
        model, tokenizer = load_reference_model(cfg, device=acc.device)
    model = model_to(model, acc.device)
    from prefrec.lm.prompts import style_for
    from prefrec.lm.styles import chat_wrap

    train_samples, eval_samples = (chat_wrap(x, tokenizer, style_for(cfg.dataset, cfg.prompt))
                                   for x in (train_samples, eval_samples))
    check_samples(train_samples, k, tokenizer, where=f"{cfg.dataset}:{cfg.train_split}")
    if eval_samples:
        check_samples(eval_samples, k, tokenizer, where=f"{cfg.dataset}:{cfg.eval_split}")

    # --- reference log-probs of all candidates, once (on the accelerator, under its autocast)
    ref_keys: dict[str, str] = {}
    if cfg.reference_free:
        ref_train = torch.zeros(len(train_samples), max(len(s.candidates) for s in train_samples))
        ref_eval = torch.zeros(len(eval_samples), max((len(s.candidates) for s in eval_samples), default=1))
    else:
        cache_dir = Path(cfg.ref_cache_dir) if cfg.ref_cache_dir else run_dir.parent / ".ref_cache"
        mfp, tfp = rc.model_fingerprint(model), rc.tokenizer_fingerprint(tokenizer)

        def parts(samples):
            return {"model": mfp, "data": rc.data_fingerprint(samples), "tokenizer": tfp,
                    "format": str(rc.FORMAT_VERSION), "precision": acc.prefrec_precision}

        with acc.autocast():
            c_train = rc.load_or_compute(model, tokenizer, train_samples, cache_dir=cache_dir, path=cfg.ref_cache,
                                         batch_size=cfg.ref_batch_size, parts=parts(train_samples))
            ref_train = c_train.logps
            ref_keys["train"] = c_train.key
            if eval_samples:
                c_eval = rc.load_or_compute(model, tokenizer, eval_samples, cache_dir=cache_dir,
                                            batch_size=cfg.ref_batch_size, parts=parts(eval_samples))
                ref_eval = c_eval.logps
                ref_keys["eval"] = c_eval.key
            else:
                ref_eval = torch.zeros(0, 1)

    model, params, sched, optimizer, scheduler = setup_training(model, cfg, len(train_samples), dist.world,
                                                                acc.device)
    scaler = make_scaler(acc)
    bs, global_micro, micro_per_epoch = sched.batch_size, sched.global_micro, sched.micro_per_epoch

    step = 0
    state: dict = {}  # the checkpoint's state when resuming
    if start is not None:
        start, state, step = resume_from(ckpt_root, params, optimizer, scheduler, sched, scaler)
        if state.get("ref_keys", {}) != ref_keys:
            raise rc.StaleCacheError(
                "the checkpoint was trained against other reference log-probs than the current "
                "model/data give (the SFT model, data or tokenizer changed since)", where=str(start),
                fix="resume with the original model and data, or start a new run (another output_dir)")
        objective.load_state_dict(state.get("objective", {}))
        log.info("resumed from %s (step %d)", start, step)
        if step >= sched.total_steps and (done := finished_summary(run_dir, step)) is not None:
            return TrainResult(run_dir=run_dir, steps=step, final_metrics=done["train"], eval_metrics=done.get("eval", {}))
    open_run_dir(cfg, run_dir, metrics_path, dist, step if start is not None else None)
    if any(t != "none" for t in cfg.report_to):
        acc.init_trackers(run_dir.name, config=_tracker_config(cfg))

    eval_cols = sample_negatives(eval_samples, k, cfg.seed + 1, 0, False) if eval_samples else None
    eval_ref = (ref_eval.gather(1, eval_cols) if eval_samples else None)

    def run_eval(at: int) -> dict[str, float]:
        if not eval_samples:
            return {}
        m = evaluate_loss(model, tokenizer, eval_samples, eval_cols, eval_ref, objective, cfg.beta, dist,
                          cfg.per_device_eval_batch_size, cfg.scoring_chunk)
        if dist.main:
            write_jsonl(metrics_path, {"step": at, "epoch": round(at / sched.steps_per_epoch, 4), **m})
        return m

    def save(at: int, last_train: dict, last_eval: dict) -> None:
        if dist.main:
            state = {"ref_keys": ref_keys, "config_hash": config_hash(cfg), "objective": objective.state_dict(),
                     "epoch": at / sched.steps_per_epoch, "schedule": sched.key(), "train": last_train, "eval": last_eval}
            save_checkpoint(ckpt_root, at, checkpoint_parts(params, optimizer, scheduler, scaler), state,
                            keep=cfg.save_total_limit)

    neg_cache: dict[int, torch.Tensor] = {}

    def cols_for(epoch: int) -> torch.Tensor:
        if epoch not in neg_cache:
            neg_cache.clear()
            neg_cache[epoch] = sample_negatives(train_samples, k, cfg.seed, epoch, cfg.resample_negatives)
        return neg_cache[epoch]

    def rows_of(g: int) -> list[int]:
        epoch, within = divmod(g, micro_per_epoch)
        order = _epoch_order(len(train_samples), cfg.seed, epoch, global_micro)
        return order[within * global_micro:(within + 1) * global_micro][dist.rank * bs:(dist.rank + 1) * bs]

    def micro(g: int, rows: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        cols = cols_for(g // micro_per_epoch)[rows]
        ref = ref_train[torch.tensor(rows)[:, None], cols]
        loss, st = preference_step(model, tokenizer, train_samples, rows, cols, ref, objective, cfg.beta,
                                   chunk=cfg.scoring_chunk)
        stats = {key: float(v) for key, v in st.items() if isinstance(v, (int, float))}
        stats["n"] = 1.0
        stats["loss_value"] = st["loss"]
        return loss / sched.accum, stats

    def summarize(sums: dict[str, float]) -> dict[str, float]:
        n = sums.pop("n")
        return {key: v / n for key, v in sums.items()}

    loop = Loop(name=cfg.loss, acc=acc, dist=dist, cfg=cfg, schedule=sched, params=params, optimizer=optimizer,
                scheduler=scheduler, rows_of=rows_of, micro=micro, summarize=summarize, evaluate=run_eval,
                save=save, metrics_path=metrics_path, grad_mean=True, scaler=scaler, where=str(run_dir),
                log_keys=("rewards/accuracies", "rewards/margins"))
    step, last_train, last_eval, seconds = fit(loop, step, state.get("train"), state.get("eval"))

    if dist.main:
        if cfg.plots:
            try:
                make_plots(run_dir)
            except ImportError:
                log.warning("matplotlib is not installed: no plots (pip install 'prefrec[plot]')")
        if cfg.save_final_model:
            _save_final(model, tokenizer, cfg, run_dir, last_eval)
        (run_dir / "summary.json").write_text(json.dumps(
            {"steps": step, "train": last_train, "eval": last_eval, "ref_cache": ref_keys,
             "precision": acc.prefrec_precision, "device": str(acc.device), "processes": dist.world,
             "seconds": round(seconds, 1)}, indent=1))
    dist.barrier()
    if acc.trackers:
        acc.end_training()
    return TrainResult(run_dir=run_dir, steps=step, final_metrics=last_train, eval_metrics=last_eval)


def _tracker_config(cfg: Config) -> dict:
    """Flat scalars of the config for trackers (tensorboard's hparams take no nested values)."""
    return {k: v for k, v in cfg.model_dump().items() if isinstance(v, (int, float, str, bool))}


def _save_final(model, tokenizer, cfg: PreferenceConfig, run_dir: Path, eval_metrics: dict) -> None:
    """``final/``, loadable with :func:`prefrec.models.lm.load_trained_lm` like any run: the
    adapter merged into the (SFT-merged) base as a full model (small models), or the adapter
    alone with a pointer to ``cfg.model`` (``final_model: adapter``; ``auto`` picks it from 1B
    parameters on, where a merged copy costs GBs per run). LoRA runs also keep ``adapter/``."""
    from prefrec.models.lm import save_trained_lm

    extra = {"stage": "preference", "loss": cfg.loss, "beta": cfg.beta, "num_negatives": cfg.num_negatives,
             "start": cfg.model, "eval": eval_metrics}
    mode = cfg.final_model
    if mode == "auto":
        n = sum(p.numel() for p in model.parameters())
        mode = "adapter" if cfg.use_peft and n >= 1e9 and cfg.model != "tiny" else "merged"
    if cfg.use_peft:
        model.save_pretrained(run_dir / "adapter", safe_serialization=True)
        if mode == "adapter":
            base = str(Path(cfg.model).expanduser().resolve()) if Path(cfg.model).expanduser().exists() else cfg.model
            save_trained_lm(model, tokenizer, run_dir / "final", base=base, extra=extra,
                            lora={"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                                  "target_modules": list(cfg.lora_target_modules)})
            return
        model = model.merge_and_unload()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True  # off for training only; generation with the saved model needs it
    save_trained_lm(model, tokenizer, run_dir / "final", base=cfg.model, lora=None, extra=extra)


def _tracker_config(cfg: Config) -> dict:
    """Flat scalars of the config for trackers (tensorboard's hparams take no nested values)."""
    return {k: v for k, v in cfg.model_dump().items() if isinstance(v, (int, float, str, bool))}


def _save_final(model, tokenizer, cfg: PreferenceConfig, run_dir: Path, eval_metrics: dict) -> None:
    """``final/``: the adapter merged into the (SFT-merged) base, saved as a full model, so
    :func:`prefrec.models.lm.load_trained_lm` and the evaluator load it like any run; the
    adapter alone goes to ``adapter/`` (small, for inspection or re-use)."""
    from prefrec.models.lm import save_trained_lm

    from prefrec.lm.runinfo import run_record

    extra = {"stage": "preference", "loss": cfg.loss, "beta": cfg.beta, "num_negatives": cfg.num_negatives,
             "start": cfg.model, "eval": eval_metrics, **run_record(cfg)}
    if cfg.use_peft:
        model.save_pretrained(run_dir / "adapter", safe_serialization=True)
        model = model.merge_and_unload()
    if getattr(model, "config", None) is not None:
        model.config.use_cache = True  # off for training only; generation with the saved model needs it
    save_trained_lm(model, tokenizer, run_dir / "final", base=cfg.model, lora=None, extra=extra)
