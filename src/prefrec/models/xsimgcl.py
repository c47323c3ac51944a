"""XSimGCL (Yu et al., TKDE 2023) as in IR-Benchmark model_XSimGCL.py (PSL paper's third backbone).

LightGCN propagation over the training graph, with two changes:
- in training, every layer's output gets ``e <- e + sign(e) * normalize(noise) * eps`` (one
  forward pass yields both views; no graph augmentation);
- the final embedding is the mean of layers ``1..L`` (the ego layer excluded), and layer
  ``cl_layer`` is the contrastive view: the training objective adds
  ``cl_weight * (InfoNCE(users) + InfoNCE(items))`` between final and view embeddings of the
  batch's users and positive items (duplicates kept, in-batch negatives, temperature ``cl_tau``).

Noise: IR-Benchmark draws ``N(0, I)``; the original XSimGCL draws ``U(0, 1)``, which keeps the
noise in the embedding's orthant. ``noise="gaussian"`` (default, the peer's) or ``"uniform"``.
Evaluation (``model.eval()``) propagates without noise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from prefrec.errors import ConfigError
from prefrec.models.lightgcn import LightGCN


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean InfoNCE of row ``k`` of ``a`` against row ``k`` of ``b``, the other rows of ``b`` as
    negatives, on cosine similarity / ``tau`` (SELFRec's / IR-Benchmark's ``InfoNCE``)."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return F.cross_entropy(a @ b.T / tau, torch.arange(len(a)))


class XSimGCL(LightGCN):
    """Noise-perturbed LightGCN with a cross-layer contrastive term (see the module doc).

    Reuses LightGCN's tables, graph and normalised split; only the propagation differs.
    """

    def __init__(self, n_users: int, n_items: int, train_user: np.ndarray, train_item: np.ndarray,
                 dim: int = 64, layers: int = 3, norm: bool = True, init: str = "xavier_uniform",
                 eps: float = 0.1, cl_layer: int = 1, cl_weight: float = 0.2, cl_tau: float = 0.1,
                 noise: Literal["gaussian", "uniform"] = "gaussian"):
        super().__init__(n_users, n_items, train_user, train_item, dim, layers, norm, init)
        if layers < 1:
            raise ConfigError(f"layers={layers}: XSimGCL needs at least one layer", where="model.layers",
                              fix="use 3 (the paper's)")
        if not 1 <= cl_layer <= layers:
            raise ConfigError(f"cl_layer={cl_layer} is not one of the layers 1..{layers}", where="model.cl_layer",
                              fix="use 1 (the paper's)")
        if cl_tau <= 0 or eps < 0 or cl_weight < 0:
            raise ConfigError(f"cl_tau={cl_tau} must be > 0, eps={eps} and cl_weight={cl_weight} >= 0",
                              where="model", fix="use cl_tau 0.1, eps 0.1, cl_weight 0.2 (the paper's)")
        self.eps, self.cl_layer, self.cl_weight, self.cl_tau, self.noise = eps, cl_layer, cl_weight, cl_tau, noise
        self._views: tuple[torch.Tensor, torch.Tensor] | None = None

    def layer_views(self, perturb: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(final = mean of layers 1..L, layer ``cl_layer``), both (U + I, d), before normalisation."""
        e = torch.cat([self.user.weight, self.item.weight], 0)
        acc, view = torch.zeros_like(e), e
        for layer in range(1, self.layers + 1):
            e = torch.sparse.mm(self.adj, e)
            if perturb and self.eps > 0:
                noise = torch.randn_like(e) if self.noise == "gaussian" else torch.rand_like(e)
                e = e + torch.sign(e) * F.normalize(noise, dim=-1) * self.eps
            acc = acc + e
            if layer == self.cl_layer:
                view = e
        return acc / self.layers, view

    def propagate(self) -> torch.Tensor:
        """LightGCN's hook: perturbed in training mode, where the views of this same pass are kept
        for :meth:`auxiliary_loss` (one propagation per batch serves both losses)."""
        final, view = self.layer_views(self.training)
        self._views = (final, view) if self.training else None
        return final

    def auxiliary_loss(self, users: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``cl_weight * (InfoNCE over the batch's users + over its positive items)`` between the
        final and the ``cl_layer`` embeddings of the last training-mode propagation."""
        if self._views is None:
            raise RuntimeError("auxiliary_loss needs a training-mode user_item_embeddings() call first")
        final, view = self._views
        self._views = None
        items = pos + self.n_users
        return self.cl_weight * (info_nce(final[users], view[users], self.cl_tau)
                                 + info_nce(final[items], view[items], self.cl_tau))
