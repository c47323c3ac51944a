"""SASRec (Kang & McAuley, ICDM 2018): self-attentive next-item model, small CPU-sized.

Why it is here: it is the classic sequential baseline of the LM-recommendation papers (S-DPO,
LLaRA tables) and NAPO uses a pretrained SASRec twice: its last hidden state is the user
representation for sharing negatives between similar users, and its score of a negative item is
the "confidence" driving the dynamic margin (research/lm_side.md §2.2-2.3).

Layout. Item ids are catalog indices ``0..n_items-1``; index ``n_items`` is padding (LLaRA's
convention: padding id = number of items). Histories are truncated to their last ``max_len``
items and **left**-padded, so the last real item always sits at position ``max_len - 1`` and the
learned absolute position embedding encodes "distance from now" (as in the original code).
Blocks are pre-LayerNorm: ``x + Attn(LN(x))``, ``x + FFN(LN(x))``, then a final LayerNorm.
Attention is causal and never looks at padding keys (each position may always see itself, so
padded rows stay finite; their outputs are ignored).

Scores. ``s(u, i) = <h_u, e_i>`` (``similarity="dot"``, the original) or the cosine
(``similarity="cos"``, what SL/PSL temperatures are calibrated for). The model never knows its
loss; :mod:`prefrec.train.sequential` picks the similarity per loss.

The model is only a function of its weights; :func:`save_sasrec` / :func:`load_sasrec` store them
as safetensors plus a JSON metadata dict (hyper-parameters and the training-split fingerprint,
see :func:`prefrec.train.sequential.check_split`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from prefrec.errors import ConfigError, DataError

Tensor = torch.Tensor

__all__ = ["SASRecConfig", "SASRec", "pad_histories", "save_sasrec", "load_sasrec"]


@dataclass(frozen=True)
class SASRecConfig:
    """Architecture hyper-parameters (the defaults are the brief's "small" SASRec)."""

    n_items: int
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 10
    dropout: float = 0.2
    similarity: Literal["dot", "cos"] = "dot"

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ConfigError(f"n_items={self.n_items} must be >= 1", where="sasrec.n_items",
                              fix="pass the catalog size")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden={self.hidden} is not divisible by heads={self.heads}",
                              where="sasrec.heads", fix="use heads=1 or 2 with hidden=64")
        if self.similarity not in ("dot", "cos"):
            raise ConfigError(f"unknown similarity {self.similarity!r}", where="sasrec.similarity",
                              fix="use 'dot' or 'cos'")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout={self.dropout} must be in [0, 1)", where="sasrec.dropout",
                              fix="use e.g. 0.2")


def pad_histories(histories: Sequence[Sequence[int]], max_len: int, pad: int) -> Tensor:
    """``(B, max_len)`` long tensor: last ``max_len`` items of each history, left-padded with ``pad``.

    An empty history is allowed (all padding); the model then only sees position embeddings.
    """
    out = torch.full((len(histories), max_len), pad, dtype=torch.long)
    for r, h in enumerate(histories):
        h = list(h)[-max_len:]
        if h:
            out[r, max_len - len(h):] = torch.as_tensor(h, dtype=torch.long)
    return out


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, d)
        self.ff2 = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)
        self.heads = heads
        self.p = dropout

    def forward(self, x: Tensor, attn_mask: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        x = x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.ln2(x))))))
        return x


class SASRec(nn.Module):
    """Self-attentive sequential recommender; see the module docstring for conventions."""

    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.pad = cfg.n_items
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=cfg.n_items)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        self.ln = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    # ------------------------------------------------------------------ encoding
    def encode(self, seq: Tensor) -> Tensor:
        """Hidden states ``(B, L, d)`` for left-padded id sequences ``(B, L)`` (L <= max_len)."""
        b, n = seq.shape
        if n > self.cfg.max_len:
            raise DataError(f"sequence length {n} exceeds max_len={self.cfg.max_len}",
                            where="SASRec.encode", fix="pad with pad_histories(..., max_len)")
        real = seq != self.pad
        pos = torch.arange(self.cfg.max_len - n, self.cfg.max_len, device=seq.device)
        x = self.item_emb(seq) * (self.cfg.hidden ** 0.5) + self.pos_emb(pos)[None]
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.ones(n, n, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=seq.device)
        mask = (causal[None] & real[:, None, :]) | eye[None]  # (B, Lq, Lk)
        mask = mask[:, None]  # broadcast over heads
        for blk in self.blocks:
            x = blk(x, mask)
        return self.ln(x)

    def _check_ids(self, ids: Tensor, what: str) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.n_items):
            raise DataError(f"{what} item id out of range 0..{self.cfg.n_items - 1}", where="SASRec",
                            fix="use the catalog indices the model was trained with")

    def histories_tensor(self, histories: Sequence[Sequence[int]]) -> Tensor:
        seq = pad_histories(histories, self.cfg.max_len, self.pad)
        real = seq[seq != self.pad]
        self._check_ids(real, "history")
        return seq.to(self.item_emb.weight.device)

    def user_state(self, histories: Sequence[Sequence[int]] | Tensor) -> Tensor:
        """``(B, d)`` hidden state at the last real position (NAPO's user representation).

        Unlike NAPO's code, the state is read at the last *real* item for short histories too:
        with left padding that is always the final position.
        """
        seq = histories if isinstance(histories, Tensor) else self.histories_tensor(histories)
        return self.encode(seq)[:, -1]

    # ------------------------------------------------------------------ scoring
    def item_vectors(self, items: Tensor) -> Tensor:
        return self.item_emb(items)

    def similarity(self, h: Tensor, e: Tensor) -> Tensor:
        """Score of user states ``h`` (B, d) against items ``e`` (B, C, d) -> (B, C)."""
        if self.cfg.similarity == "cos":
            h = F.normalize(h, dim=-1)
            e = F.normalize(e, dim=-1)
        return torch.einsum("bd,bcd->bc", h, e)

    def score_items(self, histories: Sequence[Sequence[int]] | Tensor, items: Tensor | Sequence[Sequence[int]]) -> Tensor:
        """``(B, C)`` scores of given items per row: the model's confidence for each item.

        Used for candidate ranking and by NAPO for the confidence of negatives. Scores are
        dot products (or cosines): unnormalised, comparable within one model only.
        """
        items = torch.as_tensor(items, dtype=torch.long, device=self.item_emb.weight.device)
        if items.dim() == 1:
            items = items[:, None]
        self._check_ids(items, "candidate")
        return self.similarity(self.user_state(histories), self.item_vectors(items))

    def score_candidates(self, cases: Sequence[Any]) -> Tensor:
        """``(B, C)`` scores of each case's candidates, in the case's candidate order.

        ``cases`` are :class:`prefrec.data.sequences.SequenceCase` (anything with ``history``
        and ``candidates``). Call under ``torch.no_grad()`` and ``eval()`` for evaluation.
        """
        return self.score_items([c.history for c in cases], [list(c.candidates) for c in cases])

    def full_scores(self, histories: Sequence[Sequence[int]] | Tensor) -> Tensor:
        """``(B, n_items)`` scores over the whole catalog (padding excluded)."""
        h = self.user_state(histories)
        e = self.item_emb.weight[: self.cfg.n_items]
        if self.cfg.similarity == "cos":
            h, e = F.normalize(h, dim=-1), F.normalize(e, dim=-1)
        return h @ e.T


def save_sasrec(model: SASRec, folder: str | Path, meta: dict[str, Any] | None = None, step: int = 0) -> Path:
    """Atomic safetensors checkpoint (``prefrec.checkpoint``) with config + ``meta`` in state.json."""
    from prefrec.checkpoint import save_checkpoint

    state = {"kind": "sasrec", "model_config": asdict(model.cfg), "meta": dict(meta or {})}
    return save_checkpoint(folder, step, {"model": model.state_dict()}, state, keep=1)


def load_sasrec(folder: str | Path) -> tuple[SASRec, dict[str, Any]]:
    """Load a model saved by :func:`save_sasrec`; ``folder`` is the checkpoint folder or its parent.

    Returns ``(model in eval mode, meta)``; ``meta`` holds ``train_split`` (see
    :func:`prefrec.train.sequential.check_split`) and the validation metrics.
    """
    from prefrec.checkpoint import COMPLETE, latest_checkpoint, load_checkpoint

    folder = Path(folder)
    if not (folder / COMPLETE).exists():
        found = latest_checkpoint(folder)
        if found is None:
            raise DataError("no complete SASRec checkpoint here", where=str(folder),
                            fix="pass the run's checkpoints/ folder written by `prefrec baseline --model sasrec`")
        folder = found
    try:
        parts, state = load_checkpoint(folder)
    except Exception as e:  # noqa: BLE001 - torn state.json, foreign or pickled weights
        from prefrec.rundir import one_line

        raise DataError(f"the SASRec checkpoint cannot be read ({type(e).__name__}: {one_line(e)})", where=str(folder),
                        fix="train it again with `prefrec baseline --model sasrec --overwrite`") from None
    if state.get("kind") != "sasrec":
        raise DataError(f"checkpoint kind is {state.get('kind')!r}, not 'sasrec'", where=str(folder),
                        fix="pass a SASRec checkpoint")
    try:
        model = SASRec(SASRecConfig(**state["model_config"]))
        model.load_state_dict(parts["model"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        from prefrec.rundir import one_line

        raise DataError(f"the SASRec checkpoint does not match its model config ({one_line(e)})", where=str(folder),
                        fix="train it again with `prefrec baseline --model sasrec --overwrite`") from None
    model.eval()
    return model, state.get("meta", {})
