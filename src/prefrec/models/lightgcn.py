"""LightGCN (He et al., SIGIR 2020) as in IR-Benchmark model_LightGCN.py.

Graph: symmetric normalised bipartite adjacency ``1/sqrt(deg_u deg_i)`` built from the
**training** edges only (after the validation holdout: validation and test edges never leak).
Embedding: mean of layers 0..L (the ego layer included), then L2-normalised if ``norm``.
Propagation runs on every call (so gradients flow through the graph every batch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prefrec.errors import ConfigError
from prefrec.models.mf import EmbeddingRecommender, init_embeddings


def normalized_adjacency(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Sparse (coalesced COO) ``D^-1/2 A D^-1/2`` of the (n_users + n_items) bipartite graph; isolated nodes
    get no edges (their rows are zero, so their propagated layers are zero)."""
    user = np.asarray(user, dtype=np.int64)
    item = np.asarray(item, dtype=np.int64)
    keys = np.unique(user * n_items + item)
    user, item = keys // n_items, keys % n_items
    du = np.bincount(user, minlength=n_users).astype(np.float64)
    di = np.bincount(item, minlength=n_items).astype(np.float64)
    w = 1.0 / np.sqrt(du[user] * di[item])
    rows = np.concatenate([user, item + n_users])
    cols = np.concatenate([item + n_users, user])
    vals = np.concatenate([w, w]).astype(np.float32)
    n = n_users + n_items
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals), (n, n),
                                  check_invariants=True)
    return coo.coalesce()


class LightGCN(EmbeddingRecommender):
    """``e = mean_{l=0..L} A^l e^0``; ``layers`` defaults to 2 (the paper's B.4; the peer CLI's is 3)."""

    def __init__(self, n_users: int, n_items: int, train_user: np.ndarray, train_item: np.ndarray,
                 dim: int = 64, layers: int = 2, norm: bool = True, init: str = "normal"):
        super().__init__()
        if layers < 0:
            raise ConfigError(f"layers={layers} must be >= 0", where="model.layers", fix="use 2 (the paper's)")
        self.n_users, self.n_items, self.layers, self.norm = n_users, n_items, layers, norm
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        init_embeddings(self.user, self.item, init=init)
        # Not a buffer: rebuilt from the training edges, never saved in checkpoints.
        self.adj = normalized_adjacency(train_user, train_item, n_users, n_items)

    def propagate(self) -> torch.Tensor:
        e = torch.cat([self.user.weight, self.item.weight], 0)
        acc = e
        for _ in range(self.layers):
            e = torch.sparse.mm(self.adj, e)
            acc = acc + e
        return acc / (self.layers + 1)

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.propagate()
        u, i = e[: self.n_users], e[self.n_users:]
        if self.norm:
            u, i = F.normalize(u, dim=1), F.normalize(i, dim=1)
        return u, i
