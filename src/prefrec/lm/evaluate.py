"""Evaluate an LM recommender on :class:`~prefrec.lm.samples.LMSample` cases, two ways.

- ``generate`` (the papers' metric, S-DPO ``inference.py``/``evaluate_batch.py``): greedy
  decoding, at most 20 new tokens, batched with LEFT padding; the continuation (new tokens only,
  special tokens skipped, stripped) is judged by :mod:`prefrec.metrics.generation`
  -> ``HR@1``, ``ValidRatio``.
- ``rank`` (our fast path): the summed log-prob of every candidate's answer given the prompt
  (:func:`prefrec.lm.scoring.candidate_logps`, prompt encoded once) ranks the candidates
  -> ``HR@1``, ``HR@5``, ``NDCG@5``, ``NDCG@10``, ``MRR`` (:mod:`prefrec.metrics.candidates`,
  ties pessimistic). Every ranked answer is "valid" by construction, so rank HR@1 is an upper
  bound of what a perfectly formatted generation could reach with the same preferences.

Both modes run on the same cases. :func:`evaluate_lm` writes ``metrics.json`` and one JSONL of
per-case predictions per mode into an output folder, so runs can be compared case by case.
Cases are processed in order of prompt length (less padding) and written back in input order.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch

from prefrec.errors import ConfigError
from prefrec.lm.samples import LMSample
from prefrec.progress import Progress

log = logging.getLogger(__name__)

Mode = Literal["generate", "rank", "both"]
MODES = ("generate", "rank", "both")
RANK_KS = (1, 5, 10)
REPORTED_RANK = ("HR@1", "HR@5", "NDCG@5", "NDCG@10", "MRR")

__all__ = ["generate_answers", "evaluate_generation", "evaluate_ranking", "evaluate_lm", "MODES"]


def _by_length(prompts: Sequence[str]) -> list[int]:
    return sorted(range(len(prompts)), key=lambda i: len(prompts[i]))


def generate_answers(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 20,
                     batch_size: int = 8, progress: Callable[[int], None] | None = None) -> list[str]:
    """Greedy continuations of ``prompts`` (new tokens only, special tokens skipped, stripped).

    Prompts are tokenized by :func:`prefrec.lm.tokens.encode_prompt` (the same ids training
    and scoring see) and left-padded per batch so every row generates from its last column.
    """
    from prefrec.lm.tokens import encode_prompt

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[str] = [""] * len(prompts)
    order = _by_length(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = [encode_prompt(tokenizer, prompts[i]) for i in idx]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), pad, dtype=torch.long)
        att = torch.zeros((len(enc), T), dtype=torch.long)
        for r, e in enumerate(enc):
            ids[r, T - len(e):] = torch.tensor(e)
            att[r, T - len(e):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(device), attention_mask=att.to(device),
                                 do_sample=False, max_new_tokens=max_new_tokens, num_beams=1,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                 temperature=None, top_p=None, top_k=None,
                                 use_cache=True)  # trainers turn the KV cache off; decoding needs it
        new = gen[:, T:].cpu()
        for r, i in enumerate(idx):
            out[i] = tokenizer.decode(new[r], skip_special_tokens=True).strip()
        if progress:
            progress(len(idx))
    return out


def evaluate_generation(model, tokenizer, samples: Sequence[LMSample], *, max_new_tokens: int = 20,
                        batch_size: int = 8, rule: str = "paper",
                        progress: Callable[[int], None] | None = None) -> tuple[dict, list[dict]]:
    """Generation HR@1 / ValidRatio and per-case records (text, matched, valid, prediction, hit)."""
    from prefrec.metrics.generation import generation_metrics, judge_generated

    texts = generate_answers(model, tokenizer, [s.prompt for s in samples], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, progress=progress)
    judged, records = [], []
    for i, (s, text) in enumerate(zip(samples, texts)):
        j = judge_generated(text, s.candidates, s.target_index, rule=rule)  # type: ignore[arg-type]
        judged.append(j)
        records.append({"case": i, "user": s.user, "target_index": s.target_index, "target": s.target,
                        "text": text, "matched": list(j.matched), "valid": j.valid,
                        "prediction": j.prediction, "hit": j.hit})
    m = generation_metrics(judged)
    m["rule"] = rule
    return m, records


def evaluate_ranking(model, tokenizer, samples: Sequence[LMSample], *, batch_size: int = 4,
                     chunk: int | None = None, ties: str = "pessimistic",
                     progress: Callable[[int], None] | None = None) -> tuple[dict, list[dict]]:
    """Rank every case's candidates by summed answer log-prob; metrics + per-case records.

    Cases with different candidate counts are fine (batches only group equal counts)."""
    import numpy as np

    from prefrec.lm.scoring import candidate_logps
    from prefrec.metrics.candidates import hr_at_k, mrr, ndcg_at_k, target_ranks

    scores: list[list[float] | None] = [None] * len(samples)
    order = _by_length([s.prompt for s in samples])
    by_c: dict[int, list[int]] = {}
    for i in order:
        by_c.setdefault(len(samples[i].candidates), []).append(i)
    for idxs in by_c.values():
        for s in range(0, len(idxs), batch_size):
            idx = idxs[s:s + batch_size]
            lp = candidate_logps(model, tokenizer, [samples[i].prompt for i in idx],
                                 [samples[i].candidates for i in idx], grad=False, chunk=chunk)
            for r, i in enumerate(idx):
                scores[i] = lp[r].tolist()
            if progress:
                progress(len(idx))
    records, ranks = [], []
    for i, (s, sc) in enumerate(zip(samples, scores)):
        r = int(target_ranks([sc], [s.target_index], ties=ties)[0])  # type: ignore[arg-type]
        ranks.append(r)
        top = sorted(range(len(sc)), key=lambda c: -sc[c])[:5]  # type: ignore[arg-type]
        records.append({"case": i, "user": s.user, "target_index": s.target_index, "target": s.target,
                        "rank": r, "prediction": top[0], "top5": top, "hit": r == 1,
                        "scores": [round(x, 4) for x in sc]})  # type: ignore[union-attr]
    # metrics over ranks (candidate counts may differ, so not one score matrix)
    rk = np.asarray(ranks)
    m: dict = {}
    for k in RANK_KS:
        m[f"HR@{k}"] = hr_at_k(rk, k)
        m[f"NDCG@{k}"] = ndcg_at_k(rk, k)
    m["MRR"] = mrr(rk)
    m["n"] = len(ranks)
    m["ties"] = ties
    return m, records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    from prefrec.safeio import atomic_write_bytes  # unique temp name, never follows a planted symlink

    atomic_write_bytes(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))


def evaluate_lm(model, tokenizer, samples: Sequence[LMSample], *, mode: Mode = "both",
                out_dir: str | Path | None = None, max_new_tokens: int = 20, gen_batch_size: int = 8,
                rank_batch_size: int = 4, rule: str = "paper", ties: str = "pessimistic",
                meta: dict | None = None, log_every: int | None = None) -> dict:
    """Run ``generate`` and/or ``rank`` on the same ``samples``; return and (optionally) write
    ``{"generate": {...}, "rank": {...}, "meta": {...}}`` with wall-clock seconds per mode.

    Files in ``out_dir``: ``metrics.json``, ``predictions_generate.jsonl``,
    ``predictions_rank.jsonl`` (one line per case, in input order). Progress: a tqdm bar on a
    terminal, and a log line (cases done, elapsed, ETA) after the first batch and then every
    ``log_every`` cases, or every minute when ``log_every`` is None (:class:`prefrec.progress.Progress`)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}", where="evaluate-lm --mode",
                          fix=f"use one of {', '.join(MODES)}")
    if not samples:
        raise ConfigError("no evaluation cases", where="evaluate-lm",
                          fix="check the dataset/split, or raise --limit")
    was_training = getattr(model, "training", False)
    model.eval()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    result: dict = {"meta": {"n_cases": len(samples), **(meta or {})}}
    try:
        if mode in ("generate", "both"):
            t0 = time.perf_counter()
            with Progress("generate", len(samples), every=log_every, logger=log) as bar:
                m, rec = evaluate_generation(model, tokenizer, samples, max_new_tokens=max_new_tokens,
                                             batch_size=gen_batch_size, rule=rule, progress=bar)
            m["seconds"] = round(time.perf_counter() - t0, 2)
            m["seconds_per_case"] = round(m["seconds"] / len(samples), 4)
            m["max_new_tokens"] = max_new_tokens
            result["generate"] = m
            log.info("generate: HR@1=%.4f ValidRatio=%.4f (%d cases, %.1f s)", m["HR@1"],
                     m["ValidRatio"], m["n"], m["seconds"])
            if out is not None:
                _write_jsonl(out / "predictions_generate.jsonl", rec)
        if mode in ("rank", "both"):
            t0 = time.perf_counter()
            with Progress("rank", len(samples), every=log_every, logger=log) as bar:
                m, rec = evaluate_ranking(model, tokenizer, samples, batch_size=rank_batch_size, ties=ties,
                                          progress=bar)
            m["seconds"] = round(time.perf_counter() - t0, 2)
            m["seconds_per_case"] = round(m["seconds"] / len(samples), 4)
            result["rank"] = m
            log.info("rank: HR@1=%.4f HR@5=%.4f NDCG@5=%.4f NDCG@10=%.4f (%d cases, %.1f s)", m["HR@1"],
                     m["HR@5"], m["NDCG@5"], m["NDCG@10"], m["n"], m["seconds"])
            if out is not None:
                _write_jsonl(out / "predictions_rank.jsonl", rec)
    finally:
        if was_training:
            model.train()
    if out is not None:
        from prefrec.safeio import atomic_write_bytes

        atomic_write_bytes(out / "metrics.json", json.dumps(result, indent=1).encode("utf-8"))
    return result
