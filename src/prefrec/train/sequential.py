"""Classic sequential baselines on the LM test cases: random, popularity and SASRec.

Everything here consumes :class:`prefrec.data.sequences.SequenceCase` objects (``user``,
``history`` oldest first, ``target``, 20 shuffled ``candidates``, ``target_pos``), i.e. the very
cases the LM recommender is trained and evaluated on, so the numbers are comparable one to one.
Only the attributes are used, so any object with those fields works (tests use synthetic ones).

Training uses the TRAINING split only:

* next-item examples come from the training cases' sequences (``history + target``);
* negatives are drawn uniformly from items the user has *not* interacted with **in the training
  split**, fresh every batch, from a generator of their own (evaluation draws no random numbers,
  so validation cannot change what is learnt);
* validation cases only choose the checkpoint (best validation ``NDCG@10`` over the 20
  candidates) and trigger early stopping; test cases are never passed to the trainer;
* popularity counts for the popularity ranker and the bias metrics come from the training
  cases (:func:`item_counts`);
* the checkpoint metadata stores :func:`split_fingerprint` of the training cases, and
  :func:`check_split` refuses a model trained on another split (e.g. NAPO must not take user
  states / confidences from a SASRec that saw the test users).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import numpy as np
import torch

from prefrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)
Tensor = torch.Tensor

__all__ = ["CaseLike", "split_fingerprint", "check_split", "item_counts", "user_item_sets",
           "NegativeSampler", "RandomRanker", "PopularityRanker", "candidate_metrics",
           "evaluate_ranker", "SequentialTrainConfig", "train_sasrec", "LOSS_SCORING"]

EVAL_KS = (1, 5, 10)


class CaseLike(Protocol):
    user: int
    history: Sequence[int]
    target: int
    candidates: Sequence[int]
    target_pos: int


# --------------------------------------------------------------------------- split identity
def split_fingerprint(cases: Iterable[CaseLike]) -> str:
    """Order-independent sha256 (16 hex) of the training content: ``(user, history, target)``.

    Candidates are left out on purpose: the sequential model never sees them during training, so
    the same sequences with re-drawn candidates are the same training split.
    """
    rows = sorted(f"{int(c.user)}|{','.join(str(int(i)) for i in c.history)}|{int(c.target)}" for c in cases)
    h = hashlib.sha256()
    for r in rows:
        h.update(r.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def check_split(model_meta: dict[str, Any], split_fingerprint: str) -> None:
    """Raise :class:`DataError` unless the sequential model was trained on this training split.

    ``model_meta`` is the ``meta`` returned by :func:`prefrec.models.sasrec.load_sasrec`;
    ``split_fingerprint`` is :func:`split_fingerprint` of the training cases in use now.
    """
    got = model_meta.get("train_split")
    if got is None:
        raise DataError("the sequential model's metadata has no training-split fingerprint",
                        where="sequential model checkpoint",
                        fix="retrain it with `prefrec baseline --model sasrec` (which records the split)")
    if got != split_fingerprint:
        raise DataError(f"the sequential model was trained on another split (fingerprint {got}, "
                        f"current training split {split_fingerprint}); its states and scores may "
                        "have seen the evaluation users",
                        where="sequential model checkpoint",
                        fix="train SASRec on this dataset/seed's training split "
                            "(`prefrec baseline --model sasrec` with the same dataset and seed) and pass that checkpoint")


# --------------------------------------------------------------------------- training statistics
def user_item_sets(cases: Iterable[CaseLike]) -> dict[int, set[int]]:
    """Items each user interacted with in these cases (histories and targets)."""
    out: dict[int, set[int]] = {}
    for c in cases:
        s = out.setdefault(int(c.user), set())
        s.update(int(i) for i in c.history)
        s.add(int(c.target))
    return out


def item_counts(cases: Iterable[CaseLike], n_items: int) -> np.ndarray:
    """Training popularity: number of distinct users who interacted with each item.

    Distinct users rather than occurrences, because sliding-window cases repeat each interaction
    in up to 10 histories; counting users gives every interaction weight one.
    """
    counts = np.zeros(n_items, dtype=np.int64)
    for items in user_item_sets(cases).values():
        idx = np.fromiter(items, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_items):
            raise DataError(f"item id outside 0..{n_items - 1} in the training cases", where="item_counts",
                            fix="pass n_items = catalog size")
        counts[idx] += 1
    return counts


class NegativeSampler:
    """Uniform negatives among items a user has not interacted with in training (rejection sampling).

    Users unseen in training (none are sampled for them in practice) get no exclusions.
    """

    def __init__(self, cases: Iterable[CaseLike], n_items: int, seed: int = 0):
        sets = user_item_sets(cases)
        self.n_items = n_items
        self.row = {u: r for r, u in enumerate(sorted(sets))}
        self.seen = torch.zeros(len(self.row) + 1, n_items, dtype=torch.bool)
        for u, items in sets.items():
            self.seen[self.row[u], torch.as_tensor(sorted(items), dtype=torch.long)] = True
        full = self.seen.sum(1) >= n_items
        if bool(full.any()):
            raise DataError("a user has interacted with every item: no negatives to sample",
                            where="NegativeSampler", fix="drop that user or use a larger catalog")
        self.gen = torch.Generator().manual_seed(int(seed))

    def sample(self, users: Sequence[int], shape: tuple[int, ...]) -> Tensor:
        """``(len(users), *shape)`` item ids, none of them in the user's training items."""
        rows = torch.as_tensor([self.row.get(int(u), len(self.row)) for u in users], dtype=torch.long)
        rows = rows.view(-1, *([1] * len(shape))).expand(-1, *shape)
        out = torch.randint(0, self.n_items, rows.shape, generator=self.gen)
        for _ in range(100):
            bad = self.seen[rows, out]
            if not bool(bad.any()):
                return out
            out[bad] = torch.randint(0, self.n_items, (int(bad.sum()),), generator=self.gen)
        raise DataError("could not sample negatives after 100 rounds", where="NegativeSampler",
                        fix="users interact with nearly all items; use full-softmax training instead")


# --------------------------------------------------------------------------- rankers
class RandomRanker:
    """Uniform random scores (seeded): the chance level, HR@1 = 1/20 in expectation."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def score_candidates(self, cases: Sequence[CaseLike]) -> Tensor:
        n = len(cases[0].candidates) if len(cases) else 0
        return torch.as_tensor(self.rng.random((len(cases), n)), dtype=torch.float32)


class PopularityRanker:
    """Candidates scored by training popularity (:func:`item_counts`); ties broken at random (seeded).

    The tie-break is a uniform jitter in [0, 0.5) added to integer counts, so it never reorders
    items of different popularity and never favours a candidate position.
    """

    name = "popularity"

    def __init__(self, counts: np.ndarray, seed: int = 0):
        self.counts = np.asarray(counts, dtype=np.float64)
        self.rng = np.random.default_rng(seed)

    def score_candidates(self, cases: Sequence[CaseLike]) -> Tensor:
        cand = np.asarray([list(c.candidates) for c in cases], dtype=np.int64)
        s = self.counts[cand] + 0.5 * self.rng.random(cand.shape)
        return torch.as_tensor(s, dtype=torch.float64)


# --------------------------------------------------------------------------- evaluation
def candidate_metrics(scores: Tensor | np.ndarray, target_pos: Sequence[int] | np.ndarray,
                      ks: Sequence[int] = EVAL_KS) -> dict[str, float]:
    """HR@K and NDCG@K over the candidates, from ``(B, C)`` scores and the target's column.

    Delegates to :mod:`prefrec.metrics.candidates` (the one definition shared with the LM side).
    """
    from prefrec.metrics import candidates as cm

    return cm.candidate_metrics(scores, target_pos, ks=ks)


def _targets_pos(cases: Sequence[CaseLike]) -> np.ndarray:
    pos = np.asarray([int(c.target_pos) for c in cases], dtype=np.int64)
    for c, p in zip(cases, pos):
        if int(c.candidates[p]) != int(c.target):
            raise DataError(f"case of user {c.user}: candidates[target_pos] != target",
                            where="SequenceCase", fix="rebuild the cases with add_candidates")
    return pos


def evaluate_ranker(ranker: Any, cases: Sequence[CaseLike], *, counts: np.ndarray | None = None,
                    batch_size: int = 512, ks: Sequence[int] = EVAL_KS) -> dict[str, float]:
    """HR@1/5/10 and NDCG@1/5/10 over the candidates, plus popularity-bias metrics of the top-1
    recommendation when training ``counts`` are given (:func:`prefrec.metrics.popularity.popularity_report`).

    ``ranker`` is anything with ``score_candidates(cases) -> (B, C)``; a torch module is put in
    eval mode and run without gradients.
    """
    if not len(cases):
        raise DataError("no cases to evaluate", where="evaluate_ranker", fix="check the split")
    was_training = isinstance(ranker, torch.nn.Module) and ranker.training
    if isinstance(ranker, torch.nn.Module):
        ranker.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(cases), batch_size):
            parts.append(torch.as_tensor(ranker.score_candidates(cases[i:i + batch_size])).double().cpu())
    if was_training:
        ranker.train()
    scores = torch.cat(parts)
    tpos = _targets_pos(cases)
    out = candidate_metrics(scores, tpos, ks=ks)
    if counts is not None:
        from prefrec.metrics.popularity import popularity_report

        cand = np.asarray([list(c.candidates) for c in cases], dtype=np.int64)
        top1 = cand[np.arange(len(cases)), scores.argmax(1).numpy()]
        tgt = np.asarray([int(c.target) for c in cases], dtype=np.int64)
        out.update(popularity_report(top1, tgt, counts))
    return out


# --------------------------------------------------------------------------- SASRec training
# How each loss sees SASRec scores: (similarity, scale applied before the loss).
LOSS_SCORING: dict[str, tuple[str, float]] = {
    "bpr": ("dot", 1.0),      # the original SASRec/BPR setting
    "sl": ("cos", 1.0),       # code-form SL: logsumexp((cos_j - cos_pos)/tau), tau in raw-cosine units
    "sl_paper": ("cos", 1.0),
    "psl": ("cos", 0.5),      # PSL paper scale f = cos/2, so d lies in [-1, 1]
    "bsl": ("cos", 1.0),
}
DEFAULT_TAU = {"sl": 0.1, "sl_paper": 0.1, "psl": 0.05}  # bsl: tau1 = tau2 = 0.1 from make_loss


@dataclass
class SequentialTrainConfig:
    """SASRec training knobs (defaults sized for a shared 2-core CPU)."""

    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    num_negatives: int = 64
    positions: Literal["last", "all"] = "last"
    patience: int = 5
    select_metric: str = "NDCG@10"
    select_best: bool = True
    seed: int = 0
    max_minutes: float | None = None
    loss_hyper: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.positions not in ("last", "all"):
            raise ConfigError(f"unknown positions {self.positions!r}", where="train.positions",
                              fix="use 'last' (one example per case) or 'all' (every position)")
        for k in ("epochs", "batch_size", "num_negatives"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{k}={getattr(self, k)} must be >= 1", where=f"train.{k}", fix="use a positive value")


def _examples(cases: Sequence[CaseLike], max_len: int, pad: int, positions: str) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs (N, L), labels (N, L), users (N,)) with left padding; labels == pad are ignored.

    ``positions='last'``: only the final position (predict the case's target from its history);
    ``'all'``: every position predicts its next item (original SASRec objective).
    """
    from prefrec.models.sasrec import pad_histories

    seqs = [list(c.history)[-max_len:] + [int(c.target)] for c in cases]
    inp = pad_histories([s[:-1] for s in seqs], max_len, pad)
    lab = pad_histories([s[1:] for s in seqs], max_len, pad)
    if positions == "last":
        lab[:, :-1] = pad
    lab[inp == pad] = pad  # an empty-history case would have only padding as input
    users = torch.as_tensor([int(c.user) for c in cases], dtype=torch.long)
    return inp, lab, users


def train_sasrec(train_cases: Sequence[CaseLike], val_cases: Sequence[CaseLike], n_items: int, *,
                 loss: str = "bpr", model_kwargs: dict[str, Any] | None = None,
                 cfg: SequentialTrainConfig | None = None, out_dir: str | Path | None = None,
                 on_epoch: Callable[[dict[str, float]], None] | None = None):
    """Train SASRec with a shared ranking loss on the training cases; select by validation NDCG.

    Returns ``(model, info)``: the best model (eval mode) and a dict with ``history`` (one
    metrics dict per epoch), ``best`` (epoch + validation metrics), ``train_split`` fingerprint,
    ``wall_seconds``. With ``out_dir`` the best weights go to ``out_dir`` as a safetensors
    checkpoint (:func:`prefrec.models.sasrec.save_sasrec`) whose meta holds the fingerprint.
    """
    from prefrec.distributed import refuse_under_launcher
    from prefrec.losses import make_loss

    refuse_under_launcher("baseline (SASRec)")
    from prefrec.models.sasrec import SASRec, SASRecConfig, save_sasrec

    cfg = cfg or SequentialTrainConfig()
    if loss not in LOSS_SCORING:
        raise ConfigError(f"loss {loss!r} is not available for SASRec", where="loss",
                          fix=f"use one of {', '.join(LOSS_SCORING)}")
    if not len(train_cases):
        raise DataError("no training cases", where="train_sasrec", fix="check the split")
    similarity, scale = LOSS_SCORING[loss]
    hyper = dict(cfg.loss_hyper)
    if loss in DEFAULT_TAU:
        hyper.setdefault("tau", DEFAULT_TAU[loss])
    loss_fn = make_loss(loss, **hyper)
    mk = {"similarity": similarity, **(model_kwargs or {})}
    torch.manual_seed(cfg.seed)
    model = SASRec(SASRecConfig(n_items=n_items, **mk))
    sampler = NegativeSampler(train_cases, n_items, seed=cfg.seed + 1)
    inp, lab, users = _examples(train_cases, model.cfg.max_len, model.pad, cfg.positions)
    keep = (lab != model.pad).any(1)
    inp, lab, users = inp[keep], lab[keep], users[keep]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    order_rng = np.random.default_rng(cfg.seed)
    fingerprint = split_fingerprint(train_cases)
    meta_base = {"train_split": fingerprint, "loss": loss, "loss_hyper": hyper, "train": asdict(cfg),
                 "n_train_cases": len(train_cases), "n_val_cases": len(val_cases)}
    best_val, best_state, best_row, bad = -math.inf, None, None, 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.as_tensor(order_rng.permutation(len(inp)))
        total, n_rows = 0.0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            x, y, u = inp[idx], lab[idx], users[idx]
            h = model.encode(x)                                  # (b, L, d)
            m = y != model.pad                                   # positions with a label
            hs, ys = h[m], y[m]                                  # (N, d), (N,)
            us = u.unsqueeze(1).expand_as(y)[m]
            neg = sampler.sample(us.tolist(), (cfg.num_negatives,))  # (N, K)
            items = torch.cat([ys[:, None], neg], 1)
            s = model.similarity(hs, model.item_vectors(items)) * scale
            per_row = loss_fn(s[:, 0], s[:, 1:])
            l = per_row.mean()
            opt.zero_grad(set_to_none=True)
            l.backward()
            opt.step()
            total += float(l.detach()) * len(ys)
            n_rows += len(ys)
        row: dict[str, float] = {"epoch": epoch, "train/loss": total / max(n_rows, 1),
                                 "seconds": time.perf_counter() - t0}
        if len(val_cases):
            val = evaluate_ranker(model, val_cases)
            row.update({f"val/{k}": v for k, v in val.items()})
        history.append(row)
        if on_epoch:
            on_epoch(row)
        log.info("epoch %d loss %.4f val %s %.4f", epoch, row["train/loss"], cfg.select_metric,
                 row.get(f"val/{cfg.select_metric}", float("nan")))
        if cfg.select_best and len(val_cases):
            key = f"val/{cfg.select_metric}"
            if key not in row:
                raise ConfigError(f"unknown selection metric {cfg.select_metric!r}", where="train.select_metric",
                                  fix="use one of " + ", ".join(k[4:] for k in row if k.startswith("val/")))
            score = row[key]
        else:
            score = float(epoch)  # keep the last epoch
        if score > best_val:
            best_val, best_row, bad = score, row, 0
            best_state = copy.deepcopy(model.state_dict())
            if out_dir is not None:
                save_sasrec(model, out_dir, {**meta_base, "epoch": epoch, "val": {k: v for k, v in row.items()}},
                            step=epoch)
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("early stop at epoch %d (best %s %.4f)", epoch, cfg.select_metric, best_val)
                break
        if cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes:
            log.info("time budget of %.1f min reached at epoch %d", cfg.max_minutes, epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    info = {**meta_base, "history": history, "best": best_row, "wall_seconds": time.perf_counter() - t0}
    return model, info
