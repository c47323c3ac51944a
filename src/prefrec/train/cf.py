"""The CF training loop: MF / LightGCN x BPR, SL, BSL, PSL, AdvInfoNCE, LLPAUC; the paper's protocol.

Protocol (research §3): Adam (coupled weight decay), batches over shuffled training (u, i) pairs,
fresh negatives every batch (per-row, paper; or shared, fast), validation every ``eval_every``
epochs, best checkpoint by validation NDCG@20 with ties going to the later epoch, optional early
stopping (off by default), test on the best weights. Writes ``<output_dir>/<name>/``:
``config.yaml``, ``metrics.jsonl``, ``checkpoints/step-*`` (resume), ``best.safetensors``,
``report.md``.

AdvInfoNCE and LLPAUC are min-max objectives with state beside the model (an adversary; LLPAUC's
scalars): :mod:`prefrec.cf.minmax` holds it, and it is checkpointed with the model for resume.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from prefrec.cf.config import CFConfig
from prefrec.cf.data import UserItems, false_negative_split, holdout_per_user, random_split
from prefrec.errors import ConfigError, DataError

log = logging.getLogger("prefrec.train.cf")

# Scores fed to each loss are multiplied by this (PSL works on the paper's cos/2 scale, §0.4).
SCORE_SCALE = {"psl": 0.5}
CF_LOSSES = ("bpr", "sl", "sl_paper", "psl", "bsl", "advinfonce", "llpauc")
MINMAX_KEYS = ("neg_weight", "lr_adv", "epoch_adv", "alpha", "beta")
"""CFLoss keys of the min-max losses: None = default; set for a loss without them = an error."""


@dataclass
class CFSplits:
    """Everything the trainer needs from the data, as per-user item sets."""

    train: UserItems
    test: UserItems
    valid: UserItems | None = None
    false_negatives: UserItems | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.train.n_users

    @property
    def n_items(self) -> int:
        return self.train.n_items


def build_splits(train: UserItems, test: UserItems, valid: str = "holdout", valid_fraction: float = 0.1,
                 noise_p: float = 0.0, noise_fraction: float = 0.1, seed: int = 2024) -> CFSplits:
    """Validation holdout (from train), then false negatives (from what is left), with checks.

    Bad input, documented behaviour: an empty test split is a DataError; users with no training
    items are kept (they are ranked with their untrained embeddings and, with
    ``denominator='all'``, count in the average); items never seen in training stay rankable.
    """
    if len(test) == 0:
        raise DataError("the test split is empty", where="data.dataset",
                        fix="a CF evaluation needs test interactions; check the dataset")
    if len(train) == 0:
        raise DataError("the training split is empty", where="data.dataset", fix="check the dataset")
    v = None
    if valid == "holdout":
        train, v = holdout_per_user(train, valid_fraction, seed)
    elif valid == "test":
        v = test
    elif valid != "none":
        raise ConfigError(f"unknown validation mode {valid!r}", where="data.valid", fix="use holdout, test or none")
    fn = None
    if noise_p > 0:
        train, fn = false_negative_split(train, noise_fraction, seed)
    seen = train.item_counts() > 0
    info = {
        "n_users": train.n_users, "n_items": train.n_items, "train": len(train),
        "valid": 0 if v is None else len(v), "test": len(test),
        "false_negatives": 0 if fn is None else len(fn),
        "users_without_train": int((train.counts == 0).sum()),
        "users_without_test": int((test.counts == 0).sum()),
        "items_unseen_in_train": int((~seen).sum()),
        "test_pairs_on_unseen_items": int((~seen[test.indices]).sum()),
    }
    if info["users_without_train"]:
        log.warning("%d users have no training items; they are ranked with untrained embeddings",
                    info["users_without_train"])
    return CFSplits(train=train, test=test, valid=v, false_negatives=fn, info=info)


def load_splits(cfg: CFConfig, data_dir: str | Path | None = None) -> CFSplits:
    """Dataset by name -> :class:`CFSplits` (predefined train/test, else a seeded random split)."""
    from prefrec.data.registry import load_dataset

    d = cfg.data
    seed = cfg.seed if d.split_seed is None else d.split_seed
    ds = load_dataset(d.dataset, data_dir)
    if "train" in ds.splits and "test" in ds.splits:
        tr, te = ds.splits["train"], ds.splits["test"]
        train = UserItems.from_pairs(tr.user, tr.item, tr.n_users, tr.n_items)
        test = UserItems.from_pairs(te.user, te.item, te.n_users, te.n_items)
    else:
        x = ds.interactions
        train, test = random_split(x.user, x.item, x.n_users, x.n_items, d.test_fraction, seed)
    splits = build_splits(train, test, d.valid, d.valid_fraction, d.noise_p, d.noise_fraction, seed)
    splits.info["dataset"] = d.dataset
    return splits


def loss_hyper(cfg: CFConfig) -> dict[str, Any]:
    """The hyperparameters of ``cfg.loss.name`` from the config, for ``make_loss`` to validate.

    The min-max keys (:data:`MINMAX_KEYS`) are passed whenever they are set, so a key set for a
    loss that does not take it (``loss.alpha`` with psl) is an error naming the loss's keys."""
    lc = cfg.loss
    hyper: dict[str, Any] = {}
    if lc.name in ("sl", "sl_paper", "advinfonce"):
        hyper = {"tau": lc.tau}
    elif lc.name == "psl":
        hyper = {"tau": lc.tau, "activation": lc.activation}
    elif lc.name == "bsl":
        hyper = {"tau1": lc.tau1, "tau2": lc.tau2}
    hyper.update({k: getattr(lc, k) for k in MINMAX_KEYS if getattr(lc, k) is not None})
    return hyper


def build_loss(cfg: CFConfig) -> tuple[Callable, float]:
    """(loss_fn(pos, neg, mask) -> (B,), score scale) from the config; validates names and taus.

    psl/sl/bsl get the fused forward+backward of :mod:`prefrec.cf.fused` (same values and
    gradients as :mod:`prefrec.losses`, fewer passes over the B x N scores). advinfonce/llpauc
    get the plain :func:`prefrec.losses.make_minmax_loss` callables (extra keyword arguments;
    :func:`build_minmax` wraps them with their state)."""
    from prefrec.losses import MINMAX_LOSSES, make_loss, make_minmax_loss

    lc = cfg.loss
    if lc.name not in CF_LOSSES:
        import difflib

        close = difflib.get_close_matches(lc.name, CF_LOSSES, n=1)
        raise ConfigError(f"unknown CF loss {lc.name!r}", where="loss.name",
                          fix=f"use one of {', '.join(CF_LOSSES)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    hyper = loss_hyper(cfg)
    if lc.name in MINMAX_LOSSES:
        return make_minmax_loss(lc.name, **hyper), SCORE_SCALE.get(lc.name, 1.0)
    from prefrec.cf.fused import fused_loss

    plain = make_loss(lc.name, **hyper)  # validates names and temperatures
    return fused_loss(lc.name, **hyper) or plain, SCORE_SCALE.get(lc.name, 1.0)


def build_minmax(cfg: CFConfig, loss_fn: Callable, splits: CFSplits):
    """The extra trained state of advinfonce / llpauc (:mod:`prefrec.cf.minmax`), else None."""
    from prefrec.losses import MINMAX_DEFAULTS

    name = cfg.loss.name
    if name == "advinfonce":
        from prefrec.cf.minmax import AdvInfoNCE

        h = {**MINMAX_DEFAULTS[name], **loss_hyper(cfg)}
        return AdvInfoNCE(loss_fn, splits.n_users, splits.n_items, cfg.model.dim, lr_adv=h["lr_adv"],
                          epoch_adv=h["epoch_adv"], weight_decay=cfg.train.weight_decay, scoring=cfg.train.scoring)
    if name == "llpauc":
        from prefrec.cf.minmax import LLPAUC

        return LLPAUC(loss_fn, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    return None


_AUTO_INIT = {"bpr": "xavier_normal", "llpauc": "small_normal"}  # the peer's re-initialisations


def build_model(cfg: CFConfig, splits: CFSplits) -> torch.nn.Module:
    """The model of ``cfg.model``; a size that cannot be allocated is a ConfigError naming model.dim."""
    try:
        return _build_model(cfg, splits)
    except (MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "alloc" not in str(e).lower() and "memory" not in str(e).lower():
            raise
        gib = (splits.n_users + splits.n_items) * cfg.model.dim * 4 / 2**30
        raise ConfigError(f"cannot allocate the embedding tables ({splits.n_users:,} users + {splits.n_items:,} "
                          f"items x dim {cfg.model.dim} = {gib:,.1f} GiB, more with the optimizer)",
                          where="model.dim", fix="lower model.dim") from None


def _build_model(cfg: CFConfig, splits: CFSplits) -> torch.nn.Module:
    m = cfg.model
    init = m.init if m.init != "auto" else _AUTO_INIT.get(cfg.loss.name, "xavier_uniform" if m.name == "xsimgcl" else "normal")
    if m.name == "mf":
        from prefrec.models.mf import MF

        return MF(splits.n_users, splits.n_items, m.dim, m.norm, init)
    from prefrec.cf.config import DEFAULT_LAYERS, XSIMGCL_DEFAULTS

    layers = m.layers if m.layers is not None else DEFAULT_LAYERS[m.name]
    if m.name == "xsimgcl":
        from prefrec.models.xsimgcl import XSimGCL

        extra = {k: getattr(m, k) if getattr(m, k) is not None else v for k, v in XSIMGCL_DEFAULTS.items()}
        return XSimGCL(splits.n_users, splits.n_items, splits.train.users, splits.train.indices,
                       m.dim, layers, m.norm, init, **extra)
    from prefrec.models.lightgcn import LightGCN

    return LightGCN(splits.n_users, splits.n_items, splits.train.users, splits.train.indices,
                    m.dim, layers, m.norm, init)


def _batch_embeddings(model, users: torch.Tensor, item_rows: torch.Tensor | None):
    """(u (B, d), items (I, d) or rows of it) for one batch.

    MF fast path: gather the needed rows first, then L2-normalise only those (row-wise, so the
    values equal rows of the normalised tables) instead of normalising all |U| + |I| rows and
    back-propagating through them every batch. ``item_rows=None`` means every item (per-row
    dense scoring needs the whole table). Other models (LightGCN) use their full tables.
    """
    from prefrec.models.mf import MF

    if type(model) is MF:
        from prefrec.cf.normalize import normalize_rows  # F.normalize's values, one-pass backward

        u = model.user.weight[users]
        it = model.item.weight if item_rows is None else model.item.weight[item_rows]
        if model.norm:
            u, it = normalize_rows(u), normalize_rows(it)
        return u, it
    U, I = model.user_item_embeddings()
    return U[users], (I if item_rows is None else I[item_rows])


def batch_scores(model, users, pos, sampler, scale: float, negatives: int, mode: str,
                 scoring: str = "auto", workspace=None):
    """One batch's scores: embeddings once, positive scores, fresh negatives.

    Returns ``(pos (B,), neg (B, N), mask (B, N) or None, negative ids)``; the ids are ``(B, N)``
    per row or ``(N,)`` shared. The loss's score scale (PSL: cos/2) is applied to the (B, d) user
    rows, not to the (B, N) scores (exact for the power-of-two scale). ``workspace``
    (:class:`prefrec.cf.scoring.Workspace`) lets the dense per-row path reuse its (B, |I|) buffer.
    """
    from prefrec.cf import scoring as sc

    B = len(users)
    if mode == "shared":
        items = sampler.sample_shared(negatives)
        mask = sampler.shared_mask(users, items)
        u, rows = _batch_embeddings(model, users, torch.cat([pos, items]))
        if scale != 1.0:
            u = u * scale
        sp = (u * rows[:B]).sum(-1)
        sn = u @ rows[B:].T
    else:
        neg = sampler.sample(users, negatives)
        mask = None
        u, I = _batch_embeddings(model, users, None)
        if scale != 1.0:
            u = u * scale
        sp = (u * I[pos]).sum(-1)
        sn = sc.per_row_scores(u, I, neg, scoring, workspace)
        items = neg
    return sp, sn, mask, items


def batch_loss(model, users, pos, sampler, loss_fn, scale: float, negatives: int, mode: str,
               scoring: str = "auto", workspace=None) -> torch.Tensor:
    """Mean loss of one batch (:func:`batch_scores`, then ``loss_fn``)."""
    sp, sn, mask, _ = batch_scores(model, users, pos, sampler, scale, negatives, mode, scoring, workspace)
    return loss_fn(sp, sn, mask).mean()


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam with coupled weight decay on every parameter (the peer's optimiser, dense over the full
    tables). The fused CPU kernel when available: same update rule, one pass over the tables
    instead of ~10 (measured 0.15 s -> 0.016 s per step on Gowalla's 4.5M parameters)."""
    params = list(model.parameters())
    if all(p.device.type == "cpu" and p.dtype in (torch.float32, torch.float64) for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def evaluate(model, splits: CFSplits, truth: UserItems, cfg: CFConfig, groups: np.ndarray | None = None
             ) -> dict[str, float]:
    from prefrec.cf.evaluate import evaluate_full

    model.eval()
    with torch.no_grad():
        U, I = model.user_item_embeddings()
        out = evaluate_full(U, I, splits.train, truth, cfg.train.ks, cfg.train.eval_chunk,
                            cfg.data.denominator, item_groups=groups)
    model.train()
    return out


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save

    from prefrec.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, save({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}))


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:  # noqa: BLE001 - torn, foreign (pickle) or other-shape weights
        from prefrec.rundir import one_line

        raise DataError(f"cannot load the weights ({type(e).__name__}: {one_line(e)})", where=str(path),
                        fix="the run's config.yaml must match its weights (model.name, model.dim, dataset); "
                            "restore it, or train the run again (--overwrite keeps the old folder aside)") from None


def splits_fingerprint(splits: CFSplits) -> str:
    """sha256 of the train/test pairs (a resume refuses a checkpoint trained on other data)."""
    import hashlib

    h = hashlib.sha256()
    for ui in (splits.train, splits.test):
        h.update(np.int64([ui.n_users, ui.n_items]).tobytes())
        h.update(np.ascontiguousarray(ui.indptr).tobytes())
        h.update(np.ascontiguousarray(ui.indices).tobytes())
    return h.hexdigest()[:16]


class _Jsonl:
    def __init__(self, path: Path):
        self.path = path

    def truncate_after(self, epoch: int) -> None:
        """On resume: drop records written after the checkpoint we resume from (and a torn last line)."""
        from prefrec.rundir import keep_rows

        keep_rows(self.path, lambda r: r.get("epoch", 0) <= epoch and r.get("split") != "test")

    def train_seconds(self) -> float:
        """Training seconds of every epoch logged so far (those of a resumed run's earlier
        process included, so a resume that trains nothing still reports the real cost)."""
        if not self.path.exists():
            return 0.0
        rows = [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
        return float(sum(r.get("seconds", 0.0) for r in rows if r.get("split") == "train"))

    def write(self, rec: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")


def train_cf(cfg: CFConfig, data_dir: str | Path | None = None, resume: bool = False,
             splits: CFSplits | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train, select, test; returns ``{"test": metrics, "best_epoch", "run_dir", ...}``.

    ``train.threads`` (if > 0) sets torch's intra-op threads for the run and restores them after.
    One process only: under a multi-process launcher every copy is stopped with a clear message.
    """
    from prefrec.distributed import refuse_under_launcher
    from prefrec.rundir import child, claim

    refuse_under_launcher("train-cf")
    run = Path(run_dir) if run_dir is not None else child(cfg.output_dir, cfg.name, "name")
    threads = torch.get_num_threads()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    try:
        with claim(run):
            return _train_cf(cfg, data_dir, resume, splits, run)
    finally:
        torch.set_num_threads(threads)


def _train_cf(cfg: CFConfig, data_dir, resume: bool, splits: CFSplits | None, run_dir) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from prefrec.cf.sampling import NegativeSampler
    from prefrec.checkpoint import load_checkpoint, save_checkpoint
    from prefrec.config import dump_config
    from prefrec.rundir import check_start, restore_newest
    from prefrec.metrics.ranking import popularity_groups

    t0 = time.time()
    tc = cfg.train
    loss_fn, scale = build_loss(cfg)  # fail on a bad loss before reading data
    if cfg.data.noise_p > 0 and tc.negative_mode == "shared":
        raise ConfigError("the false-negative setting needs per-row negatives", where="train.negative_mode",
                          fix="set train.negative_mode=per_row (or data.noise_p=0)")
    if tc.select_metric not in {f"{m}@{k}" for k in tc.ks for m in ("Recall", "NDCG")}:
        raise ConfigError(f"select_metric {tc.select_metric!r} is not computed", where="train.select_metric",
                          fix=f"use Recall@K or NDCG@K with K in {tc.ks}")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    run = Path(run_dir)
    check_start(run, cfg.model_dump(mode="json"), resume=resume, kind="cf")
    if splits is None:
        splits = load_splits(cfg, data_dir)
    data_fp = splits_fingerprint(splits)
    dump_config(cfg, run / "config.yaml")
    model = build_model(cfg, splits)
    opt = make_optimizer(model, tc.lr, tc.weight_decay)
    minmax = build_minmax(cfg, loss_fn, splits)
    from prefrec.cf.scoring import Workspace

    workspace = Workspace()
    sampler = NegativeSampler(splits.train, seed=cfg.seed + 1, noise_p=cfg.data.noise_p,
                              false_negatives=splits.false_negatives)
    rows_u = torch.from_numpy(splits.train.users)
    rows_i = torch.from_numpy(splits.train.indices)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    metrics = _Jsonl(run / "metrics.jsonl")
    ckdir = run / "checkpoints"
    start_epoch, best, best_epoch, bad = 0, -math.inf, -1, 0

    def restore(ck: Path) -> dict:
        parts, state = load_checkpoint(ck)
        if state.get("data", data_fp) != data_fp:
            raise DataError("the checkpoint was trained on other data than the dataset gives now", where=str(ck),
                            fix="resume with the original data, or start a new run (--overwrite or another name)")
        model.load_state_dict(parts["model"])
        opt.load_state_dict(parts["optimizer"])
        if minmax is not None:
            minmax.load_state_dict(parts["minmax"])
        gen.set_state(parts["rng"]["shuffle"])
        sampler.set_state(parts["rng"]["sampler"])
        torch.set_rng_state(parts["rng"]["torch"])
        return state

    if resume and (got := restore_newest(ckdir, restore)) is not None:
        ck, state = got
        start_epoch, best, best_epoch, bad = state["epoch"], state["best"], state["best_epoch"], state["bad"]
        if start_epoch > tc.epochs:
            raise ConfigError(f"the checkpoint is at epoch {start_epoch}, after train.epochs={tc.epochs}",
                              where="train.epochs", fix=f"resume with train.epochs >= {start_epoch}")
        metrics.truncate_after(start_epoch)
        log.info("resumed from %s (epoch %d)", ck, start_epoch)
    elif (run / "metrics.jsonl").exists():
        (run / "metrics.jsonl").unlink()
    if start_epoch == 0:
        from prefrec.data.datadir import data_dir as resolve_data_dir

        # the resolved data folder: `prefrec.load(run)` / `prefrec recommend` find the data without one
        metrics.write({"epoch": 0, "split": "data", **splits.info,
                       "data_dir": str(resolve_data_dir(data_dir).resolve())})
    n_rows = len(rows_u)
    n_batches = math.ceil(n_rows / tc.batch_size)
    if tc.max_batches_per_epoch:
        n_batches = min(n_batches, tc.max_batches_per_epoch)
    show = tc.progress if tc.progress is not None else sys.stderr.isatty()
    model.train()
    aux = getattr(model, "auxiliary_loss", None)
    stopped = False
    train_seconds = 0.0
    epoch = start_epoch - 1  # a finished run resumed again trains no epoch
    for epoch in range(start_epoch, tc.epochs):
        te = time.time()
        perm = torch.randperm(n_rows, generator=gen)
        total = 0.0
        for b in tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not show, leave=False):
            idx = perm[b * tc.batch_size:(b + 1) * tc.batch_size]
            users, pos = rows_u[idx], rows_i[idx]
            if minmax is None:
                loss = batch_loss(model, users, pos, sampler, loss_fn, scale, tc.negatives,
                                  tc.negative_mode, tc.scoring, workspace)
                opts = [opt]
            else:
                loss = minmax.loss(epoch, users, lambda: batch_scores(
                    model, users, pos, sampler, scale, tc.negatives, tc.negative_mode, tc.scoring, workspace))
                opts = minmax.optimizers(opt, epoch)
            if aux is not None:  # XSimGCL's contrastive term, from the same propagation
                loss = loss + aux(users, pos)
            if not torch.isfinite(loss):
                raise DataError(f"the loss became {loss.item()} at epoch {epoch + 1}, batch {b + 1}",
                                where=str(run), fix="lower train.lr or raise loss.tau")
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            for o in opts:
                o.step()
            if minmax is not None:
                minmax.after_step()
            total += loss.item()
        secs = time.time() - te
        train_seconds += secs
        rec = {"epoch": epoch + 1, "split": "train", "loss": total / max(n_batches, 1), "seconds": round(secs, 3)}
        done = epoch + 1 == tc.epochs
        if splits.valid is not None and ((epoch + 1) % tc.eval_every == 0 or done):
            tv = time.time()
            m = evaluate(model, splits, splits.valid, cfg)
            val = m[tc.select_metric]
            metrics.write(rec)
            metrics.write({"epoch": epoch + 1, "split": "valid", **m, "seconds": round(time.time() - tv, 3)})
            if val >= best:  # ties go to the later epoch (the peer's >=)
                best, best_epoch, bad = val, epoch + 1, 0
                _save_weights(model, run / "best.safetensors")
            else:
                bad += 1
            log.info("epoch %d loss %.4f valid %s %.4f (best %.4f @ %d)", epoch + 1, rec["loss"],
                     tc.select_metric, val, best, best_epoch)
            if tc.patience and bad >= tc.patience:
                stopped = True
        else:
            metrics.write(rec)
            log.info("epoch %d loss %.4f (%.1fs)", epoch + 1, rec["loss"], secs)
        if (epoch + 1) % tc.checkpoint_every == 0 or done or stopped:
            parts = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                     "rng": {"shuffle": gen.get_state(), "sampler": sampler.get_state(), "torch": torch.get_rng_state()}}
            if minmax is not None:
                parts["minmax"] = minmax.state_dict()
            save_checkpoint(ckdir, epoch + 1, parts,
                            {"epoch": epoch + 1, "best": best, "best_epoch": best_epoch, "bad": bad, "data": data_fp},
                            keep=tc.keep_checkpoints)
        if stopped:
            log.info("early stop at epoch %d (patience %d)", epoch + 1, tc.patience)
            break
    if splits.valid is None or not (run / "best.safetensors").exists():
        _save_weights(model, run / "best.safetensors")
        best_epoch = epoch + 1 if tc.epochs else 0
    _load_weights(model, run / "best.safetensors")
    groups = popularity_groups(splits.train.item_counts(), 3)
    test = evaluate(model, splits, splits.test, cfg, groups)
    result = {"test": test, "best_epoch": best_epoch, "best_valid": best if best > -math.inf else None,
              "train_seconds": round(metrics.train_seconds() if start_epoch else train_seconds, 1),
              "wall_seconds": round(time.time() - t0, 1),
              "run_dir": str(run), "early_stopped": stopped}
    metrics.write({"epoch": best_epoch, "split": "test", **test})
    (run / "report.md").write_text(render_report(cfg, splits, result))
    return result


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_report(cfg: CFConfig, splits: CFSplits, result: dict[str, Any]) -> str:
    """A short markdown report of one run."""
    t = result["test"]
    keys = [k for k in t if "/" not in k]
    lines = [f"# {cfg.name}", "",
             f"dataset `{cfg.data.dataset}`, model `{cfg.model.name}` (dim {cfg.model.dim}, norm {cfg.model.norm}), "
             f"loss `{cfg.loss.name}` ({_loss_desc(cfg)}), {cfg.train.epochs} epochs x {cfg.train.negatives} "
             f"{cfg.train.negative_mode} negatives, lr {cfg.train.lr}, wd {cfg.train.weight_decay}, seed {cfg.seed}.",
             f"Best epoch {result['best_epoch']} by validation {cfg.train.select_metric} "
             f"({cfg.data.valid}); training {result['train_seconds']} s, wall {result['wall_seconds']} s.", "",
             "| split | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|",
             "| test | " + " | ".join(_fmt(t[k]) for k in keys) + " |", ""]
    pop = [k for k in t if "/pop" in k]
    if pop:
        lines += ["Test Recall@20 by item popularity tercile (pop0 = least popular, micro over pairs): "
                  + ", ".join(f"{k.split('/')[1]} {t[k]:.4f}" for k in pop), ""]
    lines += ["Data: " + ", ".join(f"{k} {v}" for k, v in splits.info.items()), ""]
    return "\n".join(lines)


def _loss_desc(cfg: CFConfig) -> str:
    lc = cfg.loss
    if lc.name == "psl":
        return f"{lc.activation}, tau {lc.tau} (paper units, scores cos/2)"
    if lc.name in ("sl", "sl_paper"):
        return f"tau {lc.tau} (code units, raw cos)"
    if lc.name == "bsl":
        return f"tau1 {lc.tau1}, tau2 {lc.tau2} (code units)"
    if lc.name in ("advinfonce", "llpauc"):
        from prefrec.losses import MINMAX_DEFAULTS

        h = {**MINMAX_DEFAULTS[lc.name], **loss_hyper(cfg)}
        if lc.name == "advinfonce":
            return (f"tau {h['tau']} (code units, raw cos), neg_weight {h['neg_weight']}, "
                    f"adversary lr {h['lr_adv']} every {h['epoch_adv']}th epoch")
        return f"alpha {h['alpha']}, beta {h['beta']}, kappa {h['kappa']} (scores sigmoid(cos))"
    return "norm" if cfg.model.norm else "dot product"
