"""Fused forward+backward of the SL-family losses for the CF trainer (same values as prefrec.losses).

The CF batch has B x N = 1024 x 1000 negative scores, and with the scoring made cheap the
element-wise loss (about ten autograd ops forward and as many backward, each a full pass over
the B x N matrix plus an allocation) became the largest cost of a shared-negatives step. Here the
per-row loss and its gradient with respect to the scores are computed together in the forward
(about a dozen mostly in-place passes), and the backward is one multiply.

Formulas (per row, d_j = s_j - s_pos, w = softmax_j(z_j), masked slots z_j = -inf so w_j = 0):

- ``psl``: z_j = log act(d_j) / tau;  dL/ds_j = w_j * (act'(d_j) / act(d_j)) / tau
  (tanh: act'/act = 2 sigmoid(-2d); atan: 1 / ((1 + d^2)(atan d + 1)); relu: 1/(d + 1);
  exp: 1; slots where the activation is clamped at the float's ``tiny`` get 0, as autograd's clamp);
- ``sl`` (code form, positive not in the denominator): z_j = d_j / tau;  dL/ds_j = w_j / tau;
- ``bsl``: L = -s_pos/tau1 + (tau2/tau1) logsumexp_j(s_j/tau2);  dL/ds_j = w_j / tau1, dL/ds_pos = -1/tau1.

For psl/sl, dL/ds_pos = -sum_j dL/ds_j. Parity with :mod:`prefrec.losses` (values and gradients)
is tested in tests/test_cf_fastpaths.py. Anything else (bpr, sl_paper, advinfonce, llpauc) uses the plain losses.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

FUSED = {"psl": ("tanh", "atan", "relu", "exp"), "sl": None, "bsl": None}


def _lse_softmax(z: Tensor) -> tuple[Tensor, Tensor]:
    """(logsumexp over dim 1, softmax) with ``z`` overwritten by the softmax."""
    m = z.amax(1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    z.sub_(m).exp_()
    s = z.sum(1, keepdim=True)
    lse = (s.log() + m).squeeze(1)
    z.div_(s)
    return lse, z


BLOCK_ROWS = 64
"""Rows per block of the fused forward: each block's dozen passes stay in the core's cache
(64 x 1000 floats = 256 KB) instead of streaming the whole (B, N) matrix through L3 every pass;
measured 12.3 -> 6.7 ms for PSL-tanh on 1024 x 1000 (one thread)."""


def _block(pos: Tensor, neg: Tensor, mask: Tensor | None, name: str, hyper: tuple
           ) -> tuple[Tensor, Tensor, Tensor]:
    """(loss (b,), dL/dneg (b, N), dL/dpos (b,)) of one block of rows."""
    if name == "bsl":
        tau1, tau2 = hyper
        z = neg / tau2
        if mask is not None:
            z.masked_fill_(mask.logical_not(), -math.inf)
        lse, w = _lse_softmax(z)
        loss = -pos / tau1 + (tau2 / tau1) * lse
        g = w.div_(tau1)
        gp = torch.full_like(pos, -1.0 / tau1)
    else:
        tau, act = hyper
        d = neg - pos.unsqueeze(1)
        if name == "sl" or act == "exp":
            z = d.div_(tau)
            ratio = None
        elif act == "tanh":
            d.mul_(2.0)
            z = F.logsigmoid(d).add_(math.log(2.0)).div_(tau)
            ratio = torch.sigmoid(d.neg_()).mul_(2.0)
        else:
            tiny = torch.finfo(d.dtype).tiny
            if act == "atan":
                a = torch.atan(d).add_(1.0)
                ratio = torch.where(a > tiny, 1.0 / ((1.0 + d * d) * a), torch.zeros_like(a))
            elif act == "relu":
                a = d.add_(1.0)
                ratio = torch.where(a > tiny, a.reciprocal(), torch.zeros_like(a))
            else:
                raise ValueError(f"unknown PSL activation {act!r}")
            z = a.clamp_(min=tiny).log_().div_(tau)
        if mask is not None:
            z.masked_fill_(mask.logical_not(), -math.inf)
        loss, w = _lse_softmax(z)
        g = w if ratio is None else w.mul_(ratio)
        g.div_(tau)
        gp = -g.sum(1)
    return loss, g, gp


class _Fused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos: Tensor, neg: Tensor, mask: Tensor | None, name: str, hyper: tuple):
        with torch.no_grad():
            if neg.shape[0] <= BLOCK_ROWS:
                loss, g, gp = _block(pos, neg, mask, name, hyper)
            else:
                loss, gp = torch.empty_like(pos), torch.empty_like(pos)
                g = torch.empty_like(neg)
                for r in range(0, neg.shape[0], BLOCK_ROWS):
                    sl = slice(r, r + BLOCK_ROWS)
                    lb, gb, gpb = _block(pos[sl], neg[sl], None if mask is None else mask[sl], name, hyper)
                    loss[sl], g[sl], gp[sl] = lb, gb, gpb
        ctx.save_for_backward(g, gp)
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        g, gp = ctx.saved_tensors
        return gp * grad, g * grad.unsqueeze(1), None, None, None


def fused_loss(name: str, **hyper) -> Callable[..., Tensor] | None:
    """``loss(pos (B,), neg (B, N), mask=None) -> (B,)`` for psl/sl/bsl, else None."""
    if name == "psl":
        h = (float(hyper.get("tau", 0.1)), hyper.get("activation", "tanh"))
        if h[1] not in FUSED["psl"]:
            return None
    elif name == "sl":
        h = (float(hyper.get("tau", 0.1)), None)
    elif name == "bsl":
        h = (float(hyper.get("tau1", 0.1)), float(hyper.get("tau2", 0.1)))
    else:
        return None
    return lambda p, n, m=None: _Fused.apply(p, n, m, name, h)
