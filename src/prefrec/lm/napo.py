"""NAPO: in-batch negative sharing and a dynamic reward margin on top of S-DPO.

Ding et al., "On Negative-aware Preference Optimization for Recommendation" (arXiv 2508.09653).
The formulas follow the authors' code (acoding-xuan/NAPO@master, see
``research/lm_side.md`` §2); the paper's own equations were not retrievable.

Per example ``x`` with chosen item ``y_w`` and negatives ``N(x)``::

    A(x)    = -log sum_{j in N(x)} exp(r_j - r_w)           (S-DPO term, r = beta * reward)
    L       = -log sigmoid(A(x) - gamma_t)                    = losses.sdpo(r_w, r_N, gamma=gamma_t)
    gamma_t = gamma0 * (1 - alpha * (M_b - Mbar))              (one scalar per local batch)

*Sharing.* ``N(x)`` = the example's own K negatives plus ALL K negatives of its
``k = int(share_ratio * (N - 1))`` most similar OTHER examples of the global batch (N examples
over all processes), similarity = raw dot product of a sequential model's user states (SASRec
hidden state at the last history position in the authors' code). Same-``example_id`` entries
are excluded (the authors exclude by dataset index, which also drops duplicates created by a
distributed sampler's padding).

*How a shared negative is scored (quirk q3, kept by design).* A shared negative enters as the
value the OTHER example already computed: ``log pi(y | x_j)`` (or its reward) under the other
user's prompt ``x_j``, never re-scored under ``x_i``. That is what makes sharing free: no extra
forward pass. :func:`share_negatives` therefore just copies rows.

*Gradients.* Own negatives always keep their gradient. The authors' code gathers under
``no_grad`` so even the example's own negatives are detached (quirk q1): we do not reproduce
that, because it silently turns NAPO's negative term into a constant. Shared negatives enter
detached by default (``detach_shared=True``, the authors' behaviour for them); with
``detach_shared=False`` they keep their gradient (the other example's forward graph is reused,
so the cost is backward-only). Across processes, shared rows from other ranks are constants
unless ``cross_rank_grad=True`` (autograd all-gather; needs every rank to call backward).

*Distributed rows (quirk q2, fixed).* The authors take an example's own negatives as row ``i``
of the gathered tensor, which is rank 0's example ``i`` on every rank > 0. Here own rows always
come from the local tensors and :func:`gather_pool` records where the local rows sit in the
global pool (``local_rows``); a 2-process gloo test checks both.

*Margin.* ``M_b`` = mean sequential-model score of the negatives used by the local batch (own +
shared, valid entries); :class:`RunningMean` updates ``Mbar <- m * Mbar + (1 - m) * M_b`` and
averages it over ranks BEFORE ``gamma_t`` is computed (the authors' order). Negatives scored
higher than usual (likely false negatives) get a smaller margin. ``gamma0 = 0`` disables the
margin; ``alpha = 0`` gives a fixed margin ``gamma0`` (the paper's "fixed vs adaptive" ablation).

Everything here is a pure tensor function the preference trainer calls; nothing loads models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch

from prefrec.errors import ConfigError, DataError
from prefrec.losses import napo_margin, sdpo

Tensor = torch.Tensor

__all__ = ["NapoOptions", "SharingPool", "SharedNegatives", "NapoOutput", "RunningMean",
           "num_shared", "validate_sharing", "local_pool", "gather_pool", "share_negatives",
           "batch_confidence", "napo_batch_loss", "attach_sequential_signals", "NapoObjective",
           "STATE_KEY", "SCORES_KEY", "NapoConfig", "napo_options", "napo_objective"]

STATE_KEY = "napo_state"    # LMSample.extra: sequential-model user state (list of d floats)
SCORES_KEY = "napo_scores"  # LMSample.extra: sequential-model score of every candidate


# ----------------------------------------------------------------------------- options
@dataclass
class NapoOptions:
    """NAPO knobs (the trainer's config fields map 1:1; defaults = authors' napo.sh).

    ``use_reference=False`` is the authors' setup (rewards = ``beta * log pi``); True uses
    ``beta * (log pi - log pi_ref)`` like S-DPO, shared negatives carrying the other example's
    reference term too.
    """

    share_negatives: bool = True
    share_ratio: float = 0.7
    detach_shared: bool = True
    cross_rank_grad: bool = False
    gamma0: float = 1.0
    alpha: float = 0.3
    momentum: float = 0.9
    use_reference: bool = False
    beta: float = 1.0

    def validate(self, global_batch_size: int | None = None, where: str = "napo") -> None:
        """Raise :class:`ConfigError` on values the loss cannot use (called once at start-up)."""
        if self.share_negatives:
            validate_sharing(self.share_ratio, global_batch_size, where=where)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum={self.momentum} must be in [0, 1)", where=f"{where}.momentum",
                              fix="use the authors' 0.9 (0 = no smoothing: Mbar = M_b, margin = gamma0)")
        if not self.beta > 0:
            raise ConfigError(f"beta={self.beta} must be > 0", where=f"{where}.beta", fix="use 1.0 (authors)")

    @property
    def uses_margin(self) -> bool:
        """True when gamma_t depends on confidence scores (so the batch must carry them)."""
        return self.gamma0 != 0.0 and self.alpha != 0.0


def validate_sharing(share_ratio: float, global_batch_size: int | None = None, *,
                     where: str = "napo") -> None:
    """Config-time check for sharing: ratio in (0, 1] and at least 2 examples per global batch.

    A global batch of one (per-device batch 1 on one process) can never share: that is a
    configuration mistake, so it is an error here. At run time a short LAST batch of one example
    is not an error: :func:`share_negatives` then returns the own negatives only (k = 0).
    """
    if not (isinstance(share_ratio, (int, float)) and 0.0 < float(share_ratio) <= 1.0):
        raise ConfigError(f"share_ratio={share_ratio!r} must be in (0, 1]", where=f"{where}.share_ratio",
                          fix="use the authors' 0.7, or turn sharing off with share_negatives: false")
    if global_batch_size is not None and global_batch_size < 2:
        raise ConfigError(
            f"negative sharing needs at least 2 examples per global batch, got {global_batch_size}",
            where=f"{where}.share_negatives",
            fix="raise per_device_train_batch_size (authors: 4 per device x 4 processes) "
                "or set share_negatives: false")


def num_shared(share_ratio: float, n_global: int) -> int:
    """``k = int(share_ratio * (N - 1))`` neighbours (round down, as the authors); 0 when N = 1."""
    validate_sharing(share_ratio)
    return int(float(share_ratio) * max(n_global - 1, 0))


# ----------------------------------------------------------------------------- pool
@dataclass
class SharingPool:
    """The global batch the neighbours are drawn from.

    ``values`` (N, K) are negative log-probs or rewards; rows ``local_rows`` are THIS process's
    examples and are the caller's tensors themselves (so they keep their gradient). Other rows
    are copies from other ranks (constants unless gathered with ``cross_rank_grad``).
    """

    values: Tensor
    scores: Tensor | None
    states: Tensor
    ids: Tensor
    mask: Tensor
    local_rows: Tensor

    @property
    def size(self) -> int:
        return int(self.values.shape[0])


def _check_shapes(values: Tensor, scores: Tensor | None, states: Tensor, ids: Tensor,
                  mask: Tensor | None) -> None:
    b, k = values.shape if values.dim() == 2 else (None, None)
    if b is None:
        raise ValueError(f"negatives must be (B, K), got {tuple(values.shape)}")
    if scores is not None and tuple(scores.shape) != (b, k):
        raise ValueError(f"scores must match negatives {(b, k)}, got {tuple(scores.shape)}")
    if mask is not None and tuple(mask.shape) != (b, k):
        raise ValueError(f"mask must match negatives {(b, k)}, got {tuple(mask.shape)}")
    if states.dim() != 2 or states.shape[0] != b:
        raise ValueError(f"user states must be (B={b}, d), got {tuple(states.shape)}")
    if ids.dim() != 1 or ids.shape[0] != b:
        raise ValueError(f"example ids must be (B={b},), got {tuple(ids.shape)}")


def local_pool(values: Tensor, scores: Tensor | None, states: Tensor, ids: Tensor,
               mask: Tensor | None = None) -> SharingPool:
    """Pool of a single process: the local batch is the global batch."""
    _check_shapes(values, scores, states, ids, mask)
    m = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    return SharingPool(values, scores, states, ids.long(), m,
                       torch.arange(values.shape[0], device=values.device))


def _dist_world(group) -> tuple[int, int]:
    from prefrec.distributed import world_rank

    return world_rank(group)


def gather_pool(values: Tensor, scores: Tensor | None, states: Tensor, ids: Tensor,
                mask: Tensor | None = None, *, group=None, cross_rank_grad: bool = False) -> SharingPool:
    """All-gather (values, scores, states, ids, mask) over processes; local rows keep gradients.

    Without an initialised process group this is :func:`local_pool`. Ranks may hold different
    batch sizes (short last batch): sizes are exchanged first and padding is stripped. The local
    slice of the gathered tensor is replaced by the caller's own tensor (gather-then-replace), so
    gradients flow into the local rows; ``cross_rank_grad=True`` instead uses the autograd
    all-gather so other ranks' rows also route gradients back to their owners (every rank must
    then run backward). ``scores`` must be None on all ranks or on none.
    """
    world, rank = _dist_world(group)
    if world == 1:
        return local_pool(values, scores, states, ids, mask)
    from prefrec import distributed

    _check_shapes(values, scores, states, ids, mask)
    b = values.shape[0]
    sizes = [int(s.item()) for s in distributed.all_gather(torch.tensor([b], dtype=torch.long), group=group)]
    max_b = max(sizes)

    def pad(t: Tensor) -> Tensor:
        if t.shape[0] == max_b:
            return t.contiguous()
        filler = t.new_zeros((max_b - t.shape[0],) + tuple(t.shape[1:]))
        return torch.cat([t, filler], 0).contiguous()

    def gather(t: Tensor, keep_grad: bool) -> Tensor:
        tp = pad(t)
        if keep_grad and cross_rank_grad:
            parts = distributed.all_gather_autograd(tp, group=group)
        else:
            parts = distributed.all_gather(tp, group=group)
            if keep_grad:
                parts[rank] = tp  # gather-then-replace: the local slice is the live tensor
        return torch.cat([p[:n] for p, n in zip(parts, sizes)], 0)

    m = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    g_values = gather(values, keep_grad=values.requires_grad)
    g_scores = None if scores is None else gather(scores.detach().to(values.dtype), keep_grad=False)
    g_states = gather(states.detach(), keep_grad=False)
    g_ids = gather(ids.long(), keep_grad=False)
    g_mask = gather(m.to(torch.uint8), keep_grad=False).bool()
    offset = sum(sizes[:rank])
    local_rows = torch.arange(offset, offset + b, device=values.device)
    return SharingPool(g_values, g_scores, g_states, g_ids, g_mask, local_rows)


# ----------------------------------------------------------------------------- sharing
class SharedNegatives(NamedTuple):
    """Own + shared negatives per local example: ``(B, K + k*K)`` each; unpacks as 3-tuple + k."""

    values: Tensor
    scores: Tensor | None
    mask: Tensor
    k: int


def share_negatives(own_neg: Tensor, own_scores: Tensor | None, user_states: Tensor,
                    example_ids: Tensor, share_ratio: float, *, mask: Tensor | None = None,
                    detach_shared: bool = True, pool: SharingPool | None = None) -> SharedNegatives:
    """Append to each example the K negatives of its k most similar OTHER examples.

    ``own_neg`` (B, K): the local examples' negative log-probs or rewards (with gradient);
    ``own_scores`` (B, K) their sequential-model confidence scores (or None); ``user_states``
    (B, d); ``example_ids`` (B,) dataset indices. ``pool`` is the global batch from
    :func:`gather_pool` (default: the local batch). ``k = int(share_ratio * (N - 1))`` with N
    the pool size; neighbours are ranked by raw dot product, same-id entries are never chosen.
    If fewer than k other examples exist (duplicates) the missing slots are masked out.

    Columns ``[0, K)`` are the example's own negatives, then neighbour 1's K negatives (most
    similar first), and so on. A shared entry is the neighbour's own value, i.e. scored under
    the NEIGHBOUR's prompt (no re-scoring). With ``detach_shared`` it carries no gradient.
    A pool of one example gives k = 0: the own negatives are returned unchanged.
    """
    if pool is None:
        pool = local_pool(own_neg, own_scores, user_states, example_ids, mask)
    else:
        _check_shapes(own_neg, own_scores, user_states, example_ids, mask)
    own_mask = torch.ones_like(own_neg, dtype=torch.bool) if mask is None else mask.bool()
    b, kneg = own_neg.shape
    if pool.values.shape[1] != kneg:
        raise ValueError(f"pool has {pool.values.shape[1]} negatives per example, local batch {kneg}")
    k = min(num_shared(share_ratio, pool.size), pool.size - 1)
    if k <= 0:
        return SharedNegatives(own_neg, own_scores, own_mask, 0)

    sim = user_states.detach().to(pool.states.dtype) @ pool.states.detach().T  # (B, N)
    same = example_ids.long().view(-1, 1) == pool.ids.view(1, -1)
    sim = sim.masked_fill(same, float("-inf"))
    top_sim, idx = torch.topk(sim, k, dim=1)  # (B, k), most similar first
    valid = torch.isfinite(top_sim)
    idx = idx.masked_fill(~valid, 0)

    shared = pool.values[idx]  # (B, k, K)
    if detach_shared:
        shared = shared.detach()
    values = torch.cat([own_neg, shared.reshape(b, k * kneg).to(own_neg.dtype)], 1)
    sh_mask = (pool.mask[idx] & valid.unsqueeze(-1)).reshape(b, k * kneg)
    out_mask = torch.cat([own_mask, sh_mask], 1)
    scores = None
    if own_scores is not None:
        if pool.scores is None:
            raise ValueError("own_scores given but the pool carries no scores")
        scores = torch.cat([own_scores.detach(), pool.scores[idx].reshape(b, k * kneg).to(own_scores.dtype)], 1)
    return SharedNegatives(values, scores, out_mask, k)


# ----------------------------------------------------------------------------- margin
class RunningMean:
    """Mbar of NAPO's margin: ``Mbar <- m * Mbar + (1 - m) * M_b``, then averaged over ranks.

    Starts at 0 (authors). ``update`` is called BEFORE the current step's margin is computed, so
    the first step already sees ``Mbar = (1 - m) * M_b``. Under a process group the new value is
    all-reduced (mean) so every rank uses the same Mbar. ``state_dict``/``load_state_dict`` let
    checkpoints resume it.
    """

    def __init__(self, momentum: float = 0.9, initial: float = 0.0, *, group=None):
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum={momentum} must be in [0, 1)", where="napo.momentum",
                              fix="use the authors' 0.9")
        self.momentum = float(momentum)
        self.value = float(initial)
        self.steps = 0
        self.group = group

    def update(self, batch_value: Tensor | float) -> float:
        """Fold one batch's M_b in and return the new (rank-averaged) Mbar."""
        b = float(batch_value.detach().float().item()) if isinstance(batch_value, torch.Tensor) else float(batch_value)
        new = self.momentum * self.value + (1.0 - self.momentum) * b
        world, _ = _dist_world(self.group)
        if world > 1:
            from prefrec.distributed import all_reduce_sum

            new = float(all_reduce_sum(torch.tensor([new], dtype=torch.float64), group=self.group).item()) / world
        self.value = new
        self.steps += 1
        return self.value

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "value": self.value, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.momentum = float(state["momentum"])
        self.value = float(state["value"])
        self.steps = int(state.get("steps", 0))


def batch_confidence(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """M_b: mean confidence score over the valid negatives of the local batch (a 0-dim tensor)."""
    s = scores.detach().float()
    if mask is None:
        return s.mean()
    m = mask.bool()
    n = m.sum()
    if int(n) == 0:
        return s.new_zeros(())
    return s[m].mean()


# ----------------------------------------------------------------------------- loss
@dataclass
class NapoOutput:
    """Batch loss (scalar), per-row loss (B,), and detached metrics for metrics.jsonl."""

    loss: Tensor
    per_row: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


def napo_batch_loss(policy_pos: Tensor, policy_neg: Tensor, opts: NapoOptions, *,
                    ref_pos: Tensor | None = None, ref_neg: Tensor | None = None,
                    neg_mask: Tensor | None = None, neg_scores: Tensor | None = None,
                    user_states: Tensor | None = None, example_ids: Tensor | None = None,
                    running_mean: RunningMean | None = None, update_running_mean: bool = True,
                    distributed: bool = True, group=None) -> NapoOutput:
    """NAPO loss of one local batch, ready for ``loss.backward()``.

    ``policy_pos`` (B,) / ``policy_neg`` (B, K): summed log-probs of the chosen item and of the
    K own negatives under the policy (``ref_*`` likewise under the reference, needed when
    ``opts.use_reference``). ``neg_scores`` (B, K): sequential-model scores of the negatives
    (needed when the margin is adaptive); ``user_states`` (B, d) and ``example_ids`` (B,):
    needed for sharing. ``running_mean`` holds Mbar across steps (created by the trainer once).
    With ``distributed`` and an initialised process group the pool is gathered over ranks.
    ``update_running_mean=False`` (validation) reads Mbar without folding the batch in, so
    evaluation never changes training state.

    Rewards: ``r = beta * (log pi - log pi_ref)`` or ``beta * log pi`` without reference. Shared
    negatives are shared as rewards, so with a reference each carries its own example's
    reference term. The loss is ``mean_rows softplus(logsumexp_j(r_j - r_w) + gamma_t)``.
    """
    beta = opts.beta
    if opts.use_reference:
        if ref_pos is None or ref_neg is None:
            raise ConfigError("use_reference is on but no reference log-probs were given",
                              where="napo.use_reference",
                              fix="compute/cache reference log-probs, or set use_reference: false (authors)")
        r_pos = beta * (policy_pos - ref_pos.detach())
        r_neg = beta * (policy_neg - ref_neg.detach())
    else:
        r_pos, r_neg = beta * policy_pos, beta * policy_neg
    if opts.uses_margin and neg_scores is None:
        raise ConfigError("the adaptive NAPO margin needs confidence scores of the negatives",
                          where="napo.alpha",
                          fix="attach sequential-model (SASRec) scores to the samples, or set alpha: 0 "
                              "(fixed margin) / gamma0: 0 (no margin)")

    mask = torch.ones_like(r_neg, dtype=torch.bool) if neg_mask is None else neg_mask.bool()
    values, scores, k = r_neg, neg_scores, 0
    pool_size = r_neg.shape[0]
    if opts.share_negatives:
        if user_states is None or example_ids is None:
            raise ConfigError("negative sharing needs user states and example ids",
                              where="napo.share_negatives",
                              fix="attach sequential-model user states to the batch, or set share_negatives: false")
        pool = (gather_pool(r_neg, neg_scores, user_states, example_ids, mask, group=group,
                            cross_rank_grad=opts.cross_rank_grad)
                if distributed else local_pool(r_neg, neg_scores, user_states, example_ids, mask))
        pool_size = pool.size
        values, scores, mask, k = share_negatives(r_neg, neg_scores, user_states, example_ids,
                                                  opts.share_ratio, mask=mask,
                                                  detach_shared=opts.detach_shared, pool=pool)

    metrics: dict[str, float] = {}
    gamma: Tensor | float = 0.0
    if opts.gamma0 != 0.0:
        if opts.alpha != 0.0:
            m_b = batch_confidence(scores, mask)
            if running_mean is None:
                mbar = float(m_b)
            elif update_running_mean:
                mbar = running_mean.update(m_b)
            else:
                mbar = running_mean.value
            gamma = napo_margin(m_b, mbar, gamma0=opts.gamma0, alpha=opts.alpha).detach()
            metrics["napo/M_b"] = float(m_b)
            metrics["napo/M_bar"] = float(mbar)
        else:
            gamma = float(opts.gamma0)
    per_row = sdpo(r_pos, values, mask, gamma=gamma)
    loss = per_row.mean()

    with torch.no_grad():
        own = r_neg.detach().masked_fill(~(torch.ones_like(r_neg, dtype=torch.bool) if neg_mask is None
                                           else neg_mask.bool()), float("-inf"))
        own_mean = r_neg.detach().mean(1) if neg_mask is None else \
            (r_neg.detach() * neg_mask).sum(1) / neg_mask.sum(1).clamp_min(1)
        metrics.update({
            "rewards/chosen": float(r_pos.detach().mean()),
            "rewards/rejected": float(own_mean.mean()),
            "rewards/margins": float((r_pos.detach() - own_mean).mean()),
            "rewards/accuracies": float((r_pos.detach() > own.max(1).values).float().mean()),
            "napo/gamma": float(gamma),
            "napo/shared_k": float(k),
            "napo/pool_size": float(pool_size),
            "napo/negatives": float(mask.sum(1).float().mean()),
        })
    return NapoOutput(loss, per_row, metrics)


# ----------------------------------------------------------------------------- trainer glue
def attach_sequential_signals(samples: Sequence[Any], model, *, batch_size: int = 256,
                              where: str = "samples") -> None:
    """Store a sequential model's user state and per-candidate scores in each sample's ``extra``.

    ``model`` is a :class:`prefrec.models.sasrec.SASRec` (anything with ``user_state(histories)``
    and ``score_items(histories, items)``). Samples need ``history_ids`` and ``item_ids``
    (catalog indices). Computed once, offline, like the authors' precomputed JSON fields
    (``seq_logits``, ``scores_of_sorted_neg_items``); the model never trains here.
    """
    todo = [s for s in samples if STATE_KEY not in (s.extra or {}) or SCORES_KEY not in (s.extra or {})]
    for i, s in enumerate(todo):
        if s.history_ids is None or s.item_ids is None:
            raise DataError(f"sample {i} has no history_ids/item_ids (catalog indices)", where=where,
                            fix="build samples from SequenceCases (prefrec.lm.prompts) so item ids are known; "
                                "NAPO needs them for the sequential model")
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.no_grad():
            for lo in range(0, len(todo), batch_size):
                chunk = todo[lo:lo + batch_size]
                hist = [list(s.history_ids) for s in chunk]
                states = model.user_state(hist)
                width = max(len(s.item_ids) for s in chunk)
                items = torch.tensor([list(s.item_ids) + [s.item_ids[0]] * (width - len(s.item_ids)) for s in chunk])
                scores = model.score_items(hist, items)
                for s, h, sc in zip(chunk, states.tolist(), scores.tolist()):
                    s.extra = {**(s.extra or {}), STATE_KEY: h, SCORES_KEY: sc[:len(s.item_ids)]}
    finally:
        if was and hasattr(model, "train"):
            model.train()


class NapoObjective:
    """The preference trainer's objective for ``loss: napo`` (``train/preference.py`` ``Objective``).

    Reads user states and negative scores from ``samples[i].extra`` (see
    :func:`attach_sequential_signals`; attached lazily on first use from ``sasrec`` — a model or
    a checkpoint folder — when missing), example ids = the batch's ``rows`` (dataset indices,
    identical on every rank). During training (grad enabled) the pool is gathered over ranks
    and Mbar is updated; under ``no_grad`` (validation) sharing stays within the local batch and
    Mbar is read, not updated. Mbar is saved in checkpoints via ``state_dict``.
    """

    def __init__(self, opts: NapoOptions, *, sasrec: Any = None,
                 train_cases: Callable[[], Sequence[Any]] | None = None):
        self.opts = opts
        self.running_mean = RunningMean(opts.momentum)
        self._sasrec = sasrec
        self._train_cases = train_cases
        self._ready: set[int] = set()

    @property
    def needs_signals(self) -> bool:
        return self.opts.share_negatives or self.opts.uses_margin

    def _model(self):
        if self._sasrec is None:
            raise ConfigError("NAPO needs a sequential model (user states for sharing, scores for the margin) "
                              "and the samples carry none", where="napo.sasrec",
                              fix="train one with `prefrec baseline --model sasrec` on the same dataset/seed and "
                                  "set napo.sasrec: <its run or checkpoint dir>; or turn off "
                                  "share_negatives and set alpha: 0")
        if isinstance(self._sasrec, (str, Path)):
            from prefrec.models.sasrec import load_sasrec

            model, meta = load_sasrec(self._sasrec)
            if self._train_cases is not None:
                from prefrec.train.sequential import check_split, split_fingerprint

                check_split(meta, split_fingerprint(self._train_cases()))
            self._sasrec = model
        return self._sasrec

    def prepare(self, samples: Sequence[Any], where: str = "samples") -> None:
        """Attach sequential signals to ``samples`` if any lack them (once per sample list)."""
        if not self.needs_signals or id(samples) in self._ready:
            return
        if any(STATE_KEY not in (s.extra or {}) or SCORES_KEY not in (s.extra or {}) for s in samples):
            attach_sequential_signals(samples, self._model(), where=where)
        self._ready.add(id(samples))

    def __call__(self, batch) -> tuple[Tensor, Tensor, dict[str, float]]:
        self.prepare(batch.samples)
        opts = self.opts
        if opts.beta != batch.beta:
            opts = NapoOptions(**{**opts.__dict__, "beta": batch.beta})
        rows = list(batch.rows)
        neg_cols = batch.cols[:, 1:].tolist()
        extras = [batch.samples[i].extra or {} for i in rows]
        scores = states = None
        if opts.uses_margin:
            scores = torch.tensor([[e[SCORES_KEY][j] for j in c] for e, c in zip(extras, neg_cols)],
                                  dtype=batch.policy.dtype)
        if opts.share_negatives:
            states = torch.tensor([e[STATE_KEY] for e in extras], dtype=torch.float32)
        training = torch.is_grad_enabled()
        out = napo_batch_loss(batch.policy[:, 0], batch.policy[:, 1:], opts,
                              ref_pos=batch.reference[:, 0], ref_neg=batch.reference[:, 1:],
                              neg_scores=scores, user_states=states, example_ids=torch.tensor(rows),
                              running_mean=self.running_mean, update_running_mean=training,
                              distributed=training)
        extra = {k: v for k, v in out.metrics.items() if k.startswith("napo/")}
        return out.loss, out.per_row, extra

    def state_dict(self) -> dict:
        return {"running_mean": self.running_mean.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("running_mean"):
            self.running_mean.load_state_dict(state["running_mean"])


# ----------------------------------------------------------------------------- config section
def _napo_config_cls():
    """Build the pydantic section lazily so importing this module stays free of pydantic setup."""
    from pydantic import Field

    from prefrec.config import Config

    class NapoConfig(Config):
        """``napo:`` section of the preference trainer config (used when ``loss: napo``).

        Defaults are the authors' napo.sh. ``use_reference`` None follows the trainer's
        ``reference_free`` (NAPO's code is reference-free: set ``reference_free: true``).
        ``sasrec``: a SASRec run/checkpoint folder trained on the SAME training split (checked).
        """

        share_negatives: bool = True
        share_ratio: float = Field(0.7, description="k = int(share_ratio * (N_global - 1)) neighbours, in (0, 1]")
        detach_shared: bool = Field(True, description="shared negatives enter without gradient (authors)")
        cross_rank_grad: bool = Field(False, description="route gradients of shared rows back to other ranks")
        gamma0: float = Field(1.0, description="base margin; 0 = no margin")
        alpha: float = Field(0.3, description="margin sensitivity to confidence; 0 = fixed margin gamma0")
        momentum: float = Field(0.9, ge=0, lt=1, description="running mean Mbar momentum (authors' move_ratio)")
        use_reference: bool | None = Field(None, description="None = not reference_free")
        sasrec: str | None = Field(None, description="SASRec run/checkpoint folder for states and scores")
        check_split: bool = Field(True, description="refuse a SASRec trained on another split (leakage guard)")

    return NapoConfig


NapoConfig = _napo_config_cls()


def napo_options(cfg: Any, world_size: int = 1) -> NapoOptions:
    """:class:`NapoOptions` from a preference config (``cfg.napo``, ``cfg.beta``,
    ``cfg.reference_free``, ``cfg.per_device_train_batch_size``), validated for ``world_size``."""
    sec = getattr(cfg, "napo", None) or NapoConfig()
    ref_free = bool(getattr(cfg, "reference_free", False))
    use_ref = (not ref_free) if sec.use_reference is None else bool(sec.use_reference)
    if use_ref and ref_free:
        raise ConfigError("napo.use_reference is true but reference_free is true (no reference log-probs "
                          "are computed)", where="napo.use_reference",
                          fix="set reference_free: false to use the SFT reference, or napo.use_reference: false")
    opts = NapoOptions(share_negatives=sec.share_negatives, share_ratio=sec.share_ratio,
                       detach_shared=sec.detach_shared, cross_rank_grad=sec.cross_rank_grad, gamma0=sec.gamma0,
                       alpha=sec.alpha, momentum=sec.momentum, use_reference=use_ref,
                       beta=float(getattr(cfg, "beta", 1.0)))
    bs = getattr(cfg, "per_device_train_batch_size", None)
    opts.validate(global_batch_size=None if bs is None else bs * max(world_size, 1))
    if (opts.share_negatives or opts.uses_margin) and not sec.sasrec:
        raise ConfigError("loss 'napo' needs a sequential model for user states (sharing) and negative "
                          "scores (adaptive margin)", where="napo.sasrec",
                          fix="train one with `prefrec baseline --model sasrec` on the same dataset and seed, "
                              "set napo.sasrec: <its run folder>; or set napo.share_negatives: false and "
                              "napo.alpha: 0")
    return opts


def napo_objective(cfg: Any, world_size: int = 1) -> NapoObjective:
    """The trainer's objective for ``loss: napo``: options from ``cfg`` and the SASRec named in
    ``cfg.napo.sasrec`` (loaded lazily). Its recorded training split must equal the training
    cases ``prefrec baseline`` builds for ``cfg.dataset`` with ``cfg.seed``: a SASRec trained
    with another seed has seen this run's validation/test users, so its states and scores leak."""
    opts = napo_options(cfg, world_size)
    sec = getattr(cfg, "napo", None) or NapoConfig()
    sasrec = None
    if sec.sasrec:
        p = Path(sec.sasrec).expanduser()
        if not p.exists():
            raise ConfigError(f"SASRec folder {str(p)!r} does not exist", where="napo.sasrec",
                              fix="pass the run folder of `prefrec baseline --model sasrec` (or its checkpoints/)")
        sasrec = p / "checkpoints" if (p / "checkpoints").is_dir() else p

    def train_cases():
        # exactly the cases `prefrec baseline` trains SASRec on for this dataset and seed
        from prefrec.commands.baseline import load_cases

        splits, _ = load_cases(cfg.dataset, getattr(cfg, "seed", 0), getattr(cfg, "data_dir", None))
        return splits["train"]

    check = train_cases if sec.check_split else None
    return NapoObjective(opts, sasrec=sasrec, train_cases=check)
