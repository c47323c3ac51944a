"""Matrix factorisation: one embedding per user and per item (IR-Benchmark model_MF.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prefrec.errors import ConfigError

INITS = ("normal", "xavier_normal", "xavier_uniform", "small_normal")


def init_embeddings(*tables: nn.Embedding, init: str) -> None:
    """``normal``: nn.Embedding's default N(0, 1) (the peer's MF/LightGCN; row norms ~ sqrt(d),
    which sets the angular step size under Adam, research §0.8). ``xavier_normal``: what the
    peer's BPR re-initialises to. ``xavier_uniform``: the peer's XSimGCL. ``small_normal``: N(0, 0.01^2), what the peer's LLPAUC
    re-initialises to."""
    for t in tables:
        if init == "normal":
            nn.init.normal_(t.weight, 0.0, 1.0)
        elif init == "small_normal":
            nn.init.normal_(t.weight, 0.0, 0.01)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(t.weight)
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(t.weight)
        else:
            raise ConfigError(f"unknown init {init!r}", where="model.init", fix=f"use one of {', '.join(INITS)}")


class EmbeddingRecommender(nn.Module):
    """What MF and LightGCN share: scores are dot products of the final user and item tables.

    Subclasses define :meth:`user_item_embeddings`; training (train/cf.py), evaluation and the
    Python API only call these three methods.
    """

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of (user, item) pairs, broadcast like ``users`` and ``items``."""
        u, i = self.user_item_embeddings()
        return (u[users] * i[items]).sum(-1)

    def full_scores(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), I) scores against every item."""
        u, i = self.user_item_embeddings()
        return u[users] @ i.T


class MF(EmbeddingRecommender):
    """``s(u, i) = <e_u, e_i>``; with ``norm=True`` the embeddings are L2-normalised, so the score is
    the cosine (the paper's setting for every SL-family loss, Sec. 2)."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, norm: bool = True, init: str = "normal"):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.norm = norm
        init_embeddings(self.user, self.item, init=init)

    def user_item_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (U, d) and (I, d) tables, normalised once here when ``norm``."""
        u, i = self.user.weight, self.item.weight
        if self.norm:
            u, i = F.normalize(u, dim=1), F.normalize(i, dim=1)
        return u, i
