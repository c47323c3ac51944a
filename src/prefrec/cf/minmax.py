"""AdvInfoNCE and LLPAUC in the CF trainer: the state each trains beside the model.

Both losses are min-max objectives, so a step is more than "loss, backward, Adam on the model".
Each class here owns the extra parameters and their optimizer and tells the trainer
(:func:`prefrec.train.cf._train_cf`) which optimizers to step on a batch. The formulas are the
pure functions :func:`prefrec.losses.adv_infonce` / :func:`prefrec.losses.llpauc`, bound by
:func:`prefrec.losses.make_minmax_loss`. Both work with per-row and shared negatives: the
trainer hands over ``draw()``, which samples and scores one batch exactly as for the other losses
and returns ``(pos (B,), neg (B, N), mask or None, negative ids)``, the ids being ``(B, N)``
per row or ``(N,)`` shared. Negative sampling is the same for every loss (fresh i.i.d. negatives,
research §0.9), so these losses use the trainer's RNG streams exactly like the others.

Following IR-Benchmark (research cf_side.md §1; src/itemrec/optimizer/optim_AdvInfoNCE.py and
optim_LLPAUC.py). What is simplified is named in each class.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from prefrec.cf.scoring import per_row_scores
from prefrec.losses import adv_hardness_log_weights

Tensor = torch.Tensor
Draw = Callable[[], tuple[Tensor, Tensor, "Tensor | None", Tensor]]


class _AdversaryMF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, 0.0, 1.0)  # nn.Embedding's default, as the peer
        nn.init.normal_(self.item.weight, 0.0, 1.0)


class AdvInfoNCE:
    """AdvInfoNCE (Zhang et al., NeurIPS 2023) as trained by IR-Benchmark.

    - Adversary: a separate MF (user and item tables, the model's dim, N(0, 1) init). Hardness of
      negative k of a row is the adversary's cosine ``g_k = cos(a_u, a_{j_k})`` and the loss
      weights it as ``w_k = N softmax_k(g_k)`` (:func:`prefrec.losses.adv_hardness_log_weights`;
      in shared mode, over the row's valid negatives only).
    - Schedule, by epoch: in 0-indexed epoch ``e`` with ``(e + 1) % epoch_adv == 0`` the whole
      epoch updates **only the adversary** (Adam, ``lr_adv``, ``maximize=True``: it ascends the
      loss, making the weighted negatives harder); every other epoch updates only the model with
      the trainer's Adam (the weights are detached). Each Adam keeps its own state; both use
      ``train.weight_decay`` (coupled, as the peer).

    Simplified vs the peer: the side that is not updated in an epoch is scored under ``no_grad``
    (same updates, less work); the peer's ``set_detect_anomaly`` is dropped.
    """

    def __init__(self, loss_fn: Callable[..., Tensor], n_users: int, n_items: int, dim: int, *,
                 lr_adv: float, epoch_adv: int, weight_decay: float, scoring: str = "auto"):
        self.loss_fn = loss_fn
        self.epoch_adv = int(epoch_adv)
        self.scoring = scoring
        self.adversary = _AdversaryMF(n_users, n_items, dim)
        self.opt = torch.optim.Adam(self.adversary.parameters(), lr=lr_adv, weight_decay=weight_decay,
                                    maximize=True)

    def adversary_epoch(self, epoch: int) -> bool:
        """Whether 0-indexed ``epoch`` trains the adversary (and not the model)."""
        return (epoch + 1) % self.epoch_adv == 0

    def hardness(self, users: Tensor, neg: Tensor) -> Tensor:
        """(B, N) adversary cosines of each row's negatives (ids (B, N) per row, or (N,) shared)."""
        au = F.normalize(self.adversary.user.weight[users], dim=1)
        if neg.dim() == 2:
            return per_row_scores(au, F.normalize(self.adversary.item.weight, dim=1), neg, self.scoring)
        return au @ F.normalize(self.adversary.item.weight[neg], dim=1).T

    def loss(self, epoch: int, users: Tensor, draw: Draw) -> Tensor:
        if self.adversary_epoch(epoch):
            with torch.no_grad():
                sp, sn, mask, neg = draw()
            lw = adv_hardness_log_weights(self.hardness(users, neg), mask)
        else:
            sp, sn, mask, neg = draw()
            with torch.no_grad():
                lw = adv_hardness_log_weights(self.hardness(users, neg), mask)
        return self.loss_fn(sp, sn, mask, log_weights=lw).mean()

    def optimizers(self, model_opt: torch.optim.Optimizer, epoch: int) -> list[torch.optim.Optimizer]:
        return [self.opt] if self.adversary_epoch(epoch) else [model_opt]

    def after_step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"adversary": self.adversary.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adversary.load_state_dict(state["adversary"])
        self.opt.load_state_dict(state["optimizer"])


class LLPAUC:
    """LLPAUC (Shi et al., WWW 2024) as trained by IR-Benchmark.

    - Scores are probabilities ``f = sigmoid(s)`` of the model's scores (``sigmoid(cos)`` with
      ``model.norm``); the model's embeddings start at N(0, 0.01^2) (``model.init: auto``).
    - Extra scalars ``a, b, s_pos, s_neg, gamma, theta_a, theta_b`` start at 1, 0, .5, .5, 0, .5, .5.
    - Every batch steps the model and all scalars together (the peer's "ascent" Adam over s_pos and
      gamma is built with ``maximize=False``, so it descends too: the peer notes ascending was
      "a disaster"). Learning rates: model, a, b, theta_a, theta_b at ``train.lr``; s_neg, s_pos,
      gamma at ``2 * train.lr``; ``train.weight_decay`` on all of them. After each step the peer's
      clip: a, b in [0, 1], s_pos in [-1, 4], s_neg in [0, 5], gamma in [max(-a, b - 1), 1].

    Simplified vs the peer: its two Adams (descent over model + a, b, s_neg, theta; "ascent" over
    s_pos, gamma) become the trainer's model Adam plus one Adam over the seven scalars with the
    same per-group learning rates. Adam is per-parameter with the same betas/eps/weight decay, so
    the updates are the same.
    """

    INIT = {"a": 1.0, "b": 0.0, "s_pos": 0.5, "s_neg": 0.5, "gamma": 0.0, "theta_a": 0.5, "theta_b": 0.5}

    def __init__(self, loss_fn: Callable[..., Tensor], *, lr: float, weight_decay: float):
        self.loss_fn = loss_fn
        self.params = {k: nn.Parameter(torch.tensor(v)) for k, v in self.INIT.items()}
        p = self.params
        self.opt = torch.optim.Adam([
            {"params": [p["a"], p["b"], p["theta_a"], p["theta_b"]], "lr": lr},
            {"params": [p["s_neg"]], "lr": 2 * lr},
            {"params": [p["s_pos"], p["gamma"]], "lr": 2 * lr},
        ], lr=lr, weight_decay=weight_decay)

    def loss(self, epoch: int, users: Tensor, draw: Draw) -> Tensor:
        sp, sn, mask, _ = draw()
        return self.loss_fn(torch.sigmoid(sp), torch.sigmoid(sn), mask, params=self.params)

    def optimizers(self, model_opt: torch.optim.Optimizer, epoch: int) -> list[torch.optim.Optimizer]:
        return [model_opt, self.opt]

    def after_step(self) -> None:
        p = self.params
        with torch.no_grad():
            p["a"].clamp_(0.0, 1.0)
            p["b"].clamp_(0.0, 1.0)
            p["s_pos"].clamp_(-1.0, 4.0)
            p["s_neg"].clamp_(0.0, 5.0)
            p["gamma"].clamp_(max(-p["a"].item(), p["b"].item() - 1.0), 1.0)

    def values(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.params.items()}

    def state_dict(self) -> dict:
        return {"params": {k: v.detach().clone() for k, v in self.params.items()},
                "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.opt.load_state_dict(state["optimizer"])
