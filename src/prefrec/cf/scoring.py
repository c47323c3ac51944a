"""Scores of sampled negatives, fast paths and the slow obvious versions they are tested against.

Embeddings arrive already L2-normalised once per batch (when ``norm``), so a cosine is a dot
product: no B×N×d element-wise cosine (which is 60-75% of the peer's step, research §6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def gather_bmm_scores(u: Tensor, items: Tensor, neg: Tensor) -> Tensor:
    """(B, N) scores ``<u_b, items[neg[b, j]]>`` by gathering (B, N, d) and one bmm."""
    return torch.bmm(items[neg], u.unsqueeze(2)).squeeze(2)


def dense_gather_scores(u: Tensor, items: Tensor, neg: Tensor) -> Tensor:
    """(B, N) scores by one (B, |I|) matmul against every item, then a gather.

    Cheaper than gathering B×N×d vectors when ``B*N >= |I|`` (Gowalla: 1M draws vs 41k items),
    because the matmul is compute-bound while the gather/scatter is memory-bound.
    """
    return (u @ items.T).gather(1, neg)


class Workspace:
    """One reusable (B, |I|) float buffer for :class:`_DenseGather` (scores in the forward,
    the scattered gradient in the backward).

    Why: a fresh 1024 x 40,988 float32 tensor is 168 MB; glibc serves it with ``mmap`` and
    gives it back on free, so every batch paid ~41k page faults for the forward scores and again
    for the backward's dense gradient. Reusing one buffer removes that (measured: bench/cf_epoch.py).
    Not thread-safe; one workspace per training loop.
    """

    def __init__(self):
        self.buf: Tensor | None = None

    def get(self, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        b = self.buf
        if b is None or b.dtype != dtype or b.shape[1] != cols or b.shape[0] < rows:
            self.buf = b = torch.empty(rows, cols, dtype=dtype)
        return b[:rows]

    def clear(self) -> None:
        self.buf = None


class _DenseGather(torch.autograd.Function):
    """``(u @ items.T).gather(1, neg)`` with the (B, |I|) intermediate kept in a workspace.

    Backward: the sparse (B, N) gradient is scattered (with accumulation, so repeated draws add
    up) into the same buffer, then two matmuls give d/du and d/d items. Equal to autograd's
    ``dense_gather_scores`` (tests/test_cf_scoring.py)."""

    @staticmethod
    def forward(ctx, u: Tensor, items: Tensor, neg: Tensor, ws: Workspace) -> Tensor:
        buf = ws.get(u.shape[0], items.shape[0], u.dtype)
        torch.mm(u, items.T, out=buf)
        ctx.save_for_backward(u, items, neg)
        ctx.ws = ws
        return buf.gather(1, neg)

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, items, neg = ctx.saved_tensors
        buf = ctx.ws.get(u.shape[0], items.shape[0], u.dtype)
        buf.zero_()
        buf.scatter_add_(1, neg, grad.contiguous())
        gu = buf @ items if ctx.needs_input_grad[0] else None
        # (u^T buf)^T, not buf^T u: the same product, 1.7-2x faster from MKL with this layout
        # (1024 x 8,360: 0.028 -> 0.017 CPU-s; x 40,988: 0.138 -> 0.070)
        gi = (u.T @ buf).T if ctx.needs_input_grad[1] else None
        return gu, gi, None, None


def dense_gather_scores_ws(u: Tensor, items: Tensor, neg: Tensor, ws: Workspace) -> Tensor:
    """:func:`dense_gather_scores` without per-batch allocation of the (B, |I|) matrix."""
    return _DenseGather.apply(u, items, neg, ws)


_PSW = getattr(torch.ops.aten, "_embedding_bag_per_sample_weights_backward", None)


class _SortedBag(torch.autograd.Function):
    """``<u_b, items[neg[b, j]]>`` for the B*N drawn pairs only, with ATen's embedding-bag kernels.

    Why: the dense path computes all B*|I| scores (Gowalla: 41x the 1M that are needed, and
    two more (B, |I|) matmuls in the backward); gathering (B, N, d) vectors writes 262 MB. Here
    the pairs are sorted by item once (a stable int32 sort), then
    - forward: the fused gather-dot of ``embedding_bag``'s per-sample-weight gradient kernel
      (each item is a bag of the rows that drew it, so the gathered side is the small (B, d) table);
    - backward: d/d items is ``embedding_bag`` over the same bags with the gradient as weights,
      d/d u is ``embedding_bag`` over the rows' own draws. No (B, N, d) or (B, |I|) tensor is made.
    Equal to autograd's :func:`gather_bmm_scores` up to summation order (tests/test_cf_scoring.py).
    """

    @staticmethod
    def forward(ctx, u: Tensor, items: Tensor, neg: Tensor) -> Tensor:
        B, N = neg.shape
        flat = neg.reshape(-1)
        idx = torch.int32 if max(items.shape[0], flat.numel()) < 2**31 else torch.int64
        sorted_items, perm = torch.sort(flat.to(idx), stable=True)  # stable: a fixed summation order
        rows = perm.to(idx).div_(N, rounding_mode="floor")
        bag_off = torch.zeros(items.shape[0], dtype=idx)
        torch.cumsum(torch.bincount(flat, minlength=items.shape[0])[:-1], 0, out=bag_off[1:])
        ss = _PSW(items, u, rows, bag_off, sorted_items, 0, -1)
        out = torch.empty_like(ss).index_copy_(0, perm, ss)
        ctx.save_for_backward(u, items, flat, rows, perm, bag_off)
        ctx.n = N
        return out.view(B, N)

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, items, flat, rows, perm, bag_off = ctx.saved_tensors
        g = grad.reshape(-1)
        gu = gi = None
        if ctx.needs_input_grad[0]:
            row_off = torch.arange(0, len(flat), ctx.n)
            gu = F.embedding_bag(flat, items, row_off, mode="sum", per_sample_weights=g)
        if ctx.needs_input_grad[1]:
            gi = F.embedding_bag(rows, u, bag_off, mode="sum", per_sample_weights=g.index_select(0, perm))
        return gu, gi, None


def bag_scores(u: Tensor, items: Tensor, neg: Tensor) -> Tensor:
    """(B, N) scores of the drawn pairs only (:class:`_SortedBag`); the gather path if this torch
    lacks the kernel."""
    if _PSW is None or neg.numel() == 0:
        return gather_bmm_scores(u, items, neg)
    return _SortedBag.apply(u, items, neg)


DENSE_ITEMS_PER_NEGATIVE = 16.0
"""``auto`` scores densely when ``|I| <= this * N``; else the bag path. Measured crossover
(bench/cf_scoring_crossover.py, one thread, B = 1024, d = 64): see docs/results_cf.md."""


def choose_method(n_items: int, n_negatives: int) -> str:
    """The ``auto`` rule: dense (B x |I| matmuls, cost ~ |I|) below the measured crossover, else bag
    (cost ~ N per row, plus a sort)."""
    return "dense" if n_items <= DENSE_ITEMS_PER_NEGATIVE * n_negatives else "bag"


def per_row_scores(u: Tensor, items: Tensor, neg: Tensor, method: str = "auto",
                   workspace: Workspace | None = None) -> Tensor:
    """Per-row negative scores; ``method`` in {auto, dense, bag, gather}; auto follows
    :func:`choose_method`. With a ``workspace`` the dense path reuses one buffer across batches
    (the trainer's path)."""
    if method == "auto":
        method = choose_method(items.shape[0], neg.shape[-1])
    if method == "bag":
        return bag_scores(u, items, neg)
    if method == "dense":
        if workspace is not None:
            return dense_gather_scores_ws(u, items, neg, workspace)
        return dense_gather_scores(u, items, neg)
    if method == "gather":
        return gather_bmm_scores(u, items, neg)
    raise ValueError(f"unknown scoring method {method!r}")


def shared_scores(u: Tensor, items: Tensor, shared: Tensor) -> Tensor:
    """(B, N) scores of one shared negative set: a single (B, d) x (d, N) matmul."""
    return u @ items[shared].T


def naive_cosine_scores(u_raw: Tensor, items_raw: Tensor, neg: Tensor) -> Tensor:
    """The peer's way (reference for parity tests and the benchmark baseline): element-wise
    ``F.cosine_similarity`` over gathered (B, N, d) un-normalised embeddings."""
    return F.cosine_similarity(u_raw.unsqueeze(1), items_raw[neg], dim=-1, eps=1e-8)
