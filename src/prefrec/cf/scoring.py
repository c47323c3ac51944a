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


def per_row_scores(u: Tensor, items: Tensor, neg: Tensor, method: str = "auto") -> Tensor:
    """Per-row negative scores; ``method`` in {auto, dense, gather}; auto picks dense when the
    batch draws at least as many negatives as there are items."""
    if method == "auto":
        method = "dense" if neg.numel() >= items.shape[0] else "gather"
    if method == "dense":
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
