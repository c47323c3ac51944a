"""Row-wise L2 normalisation with a one-pass backward (``F.normalize(x, dim=1)``'s values).

Why: per-row negatives normalise the whole item table every batch (every item is drawn), and
autograd's backward of ``F.normalize`` is about ten passes over the (|I|, d) table: 0.032
CPU-s of a 0.18 s Gowalla batch, ten times its forward. The gradient has a closed form,
``dx = (dy - y <y, dy>) / n`` with ``n = max(||x||, eps)`` (``dx = dy / eps`` where the norm is
clamped), computed here in three fused-ish passes. Tested against autograd in
tests/test_cf_scoring.py.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class _Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, eps: float) -> Tensor:
        raw = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        n = raw.clamp_min(eps)
        y = x / n
        ctx.save_for_backward(y, n, raw > eps)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        y, n, live = ctx.saved_tensors
        dot = (y * dy).sum(1, keepdim=True).mul_(live)  # clamped rows: y = x / eps, no projection
        return torch.addcmul(dy, y, dot, value=-1.0).div_(n), None


def normalize_rows(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Same values as ``F.normalize(x, dim=1, eps=eps)`` for a 2-D ``x``; cheaper backward."""
    if x.dim() != 2:
        raise ValueError(f"normalize_rows expects a 2-D tensor, got shape {tuple(x.shape)}")
    return _Normalize.apply(x, eps)
