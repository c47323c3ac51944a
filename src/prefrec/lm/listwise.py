"""Listwise training of an LM recommender over all candidates of a prompt (an SFT-stage objective).

Token cross-entropy on the target title (plain SFT) teaches the format but only indirectly the
choice: rank evaluation orders the 20 candidates by ``log pi(" " + title + EOS | prompt)``, and
a step of SFT never sees the 19 other titles. Here every step scores ALL candidates behind one
copy of the prompt (:func:`prefrec.lm.scoring.packed_candidate_logps`, the same packed layout and
token ids the evaluator uses) and trains their order directly with
:func:`prefrec.losses.listwise_softmax` (summed or length-normalised log-likelihoods). An optional
token cross-entropy on the target (``ce_weight``; it is ``-logp[target] / len(target)``, already in
the matrix, so it costs nothing) keeps the answer format for generation.

Cost per example: one forward/backward of ~Lp + sum(len(answers)) tokens (ML-100K: ~250 + ~140)
instead of Lp + len(target) for SFT; no reference model.

``freeze_below`` restricts full fine-tuning to the top ``n`` transformer blocks (+ final norm):
the backward pass then stops at the lowest trained block, which is most of a step's cost on CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prefrec.errors import ConfigError, DataError
from prefrec.losses import listwise_softmax

__all__ = ["ListwiseExample", "encode_listwise", "listwise_batch_loss", "freeze_below", "untie_head"]


@dataclass
class ListwiseExample:
    prompt: list[int]
    answers: list[list[int]]  # one token list per candidate (" " + title + EOS)
    target: int


def encode_listwise(tokenizer, samples: Sequence[Any], where: str) -> list[ListwiseExample]:
    """Prompt and candidate answer ids of each sample by the one convention (prefrec.lm.tokens)."""
    from prefrec.lm.scoring import encode_cases

    if not samples:
        raise DataError("no samples", where=where, fix="check the dataset, split and *_limit settings")
    sizes = {len(s.candidates) for s in samples}
    if len(sizes) != 1:
        raise DataError(f"samples have {sorted(sizes)} candidates; listwise batches need equal sizes",
                        where=where, fix="use a dataset with a fixed number of candidates per prompt")
    p_ids, a_ids = encode_cases(tokenizer, [s.prompt for s in samples], [s.candidates for s in samples])
    return [ListwiseExample(p, a, int(s.target_index)) for p, a, s in zip(p_ids, a_ids, samples)]


def listwise_batch_loss(model, examples: Sequence[ListwiseExample], pad_id: int, *, length_norm: bool = False,
                        tau: float = 1.0, ce_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """SUMMED loss over ``examples`` (divide by the global example count) and batch statistics:
    ``listwise`` (mean listwise loss), ``target_nll`` (mean per-token NLL of the target), ``hit@1``
    (share of rows whose target has the highest score, i.e. training HR@1)."""
    from prefrec.lm.scoring import packed_candidate_logps

    logps = packed_candidate_logps(model, [e.prompt for e in examples], [e.answers for e in examples], pad_id)
    dev = logps.device
    target = torch.tensor([e.target for e in examples], device=dev)
    lengths = torch.tensor([[len(a) for a in e.answers] for e in examples], device=dev, dtype=logps.dtype)
    lw = listwise_softmax(logps, target, lengths if length_norm else None, tau=tau)
    nll = -logps.gather(1, target.unsqueeze(1)).squeeze(1) / lengths.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = lw.sum() + ce_weight * nll.sum()
    with torch.no_grad():
        s = logps / lengths if length_norm else logps
        hit = (s.argmax(1) == target).float().mean().item()
    return loss, {"listwise": lw.detach().mean().item(), "target_nll": nll.detach().mean().item(), "hit@1": hit}


def _blocks(model) -> torch.nn.ModuleList:
    """The transformer blocks of a HF causal LM (``model.model.layers`` for Llama/Qwen/SmolLM)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__}",
                          where="train_top_layers", fix="use a Llama-style model (model.model.layers) "
                          "or train_top_layers: null")
    return layers


def untie_head(model) -> None:
    """Give the LM head its own copy of the (tied) input embedding matrix, so the head can be
    trained without gradients flowing back to the input embeddings (which would run the backward
    pass through every frozen block). ``config.tie_word_embeddings`` is cleared so a saved model
    loads back untied."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or emb is None:
        raise ConfigError(f"{type(model).__name__} has no input/output embeddings", where="train_lm_head",
                          fix="use a causal LM with an lm_head, or train_lm_head: false")
    if head.weight is emb.weight or head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = torch.nn.Parameter(emb.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text = getattr(model.config, "get_text_config", None)
    if text is not None:
        text().tie_word_embeddings = False


def freeze_below(model, n: int, *, head: bool = False) -> list[str]:
    """Keep ``requires_grad`` only on the top ``n`` blocks and the final norm (full fine-tuning);
    embeddings (tied to the LM head in SmolLM2) stay frozen so the backward pass stops at the
    lowest trained block. ``head=True`` unties the LM head (:func:`untie_head`) and trains it too
    (a direct per-token bias path: cheap, only the kept answer positions reach it).
    Returns the names of the trainable parameters."""
    layers = _blocks(model)
    if not 1 <= n <= len(layers):
        raise ConfigError(f"train_top_layers={n} but the model has {len(layers)} blocks", where="train_top_layers",
                          fix=f"use 1..{len(layers)}, or null for all parameters")
    for p in model.parameters():
        p.requires_grad_(False)
    if head:
        untie_head(model)
    keep = [*layers[len(layers) - n:]]
    if head:
        keep.append(model.get_output_embeddings())
    norm = getattr(model.model, "norm", None)
    if norm is not None:
        keep.append(norm)
    for m in keep:
        for p in m.parameters():
            p.requires_grad_(True)
    return [name for name, p in model.named_parameters() if p.requires_grad]
