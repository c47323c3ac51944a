"""Shared-prefix candidate scoring: log pi(answer | prompt) for many answers per prompt.

Every LM stage that compares items (S-DPO/NAPO/RecPO rewards, reference caching, ranking
evaluation, ``recommend``) needs the SUMMED log-prob of each candidate's answer tokens
(``" " + title`` + EOS, see :mod:`prefrec.lm.tokens`) given its prompt. The peer trainer
concatenates the ~250-token prompt with each 3-15-token answer and re-encodes the prompt for
every candidate; here each prompt is encoded ONCE per forward.

Layout (one packed row per prompt, or per prompt and candidate chunk)::

    [pad .. pad | prompt (Lp tokens) | ans_1 | ans_2 | ... | ans_C | pad .. pad]
     left pad to P                     right pad to T

- Prompts are LEFT-padded so every prompt ends at column P-1; the logits we need then sit in the
  same columns of every row and one ``logits_to_keep`` index tensor serves the whole batch (the
  vocab projection is ~20% of SmolLM2's FLOPs, so it is not spent on prompt positions).
- A 4D additive float mask (0 = attend, finfo.min = blocked) lets each answer token see the
  prompt and, causally, its own answer only, never other answers or pads. transformers 5.x
  passes a 4D mask through unchanged (``masking_utils._preprocess_mask_arguments``: "If the mask
  is already 4D, simply return as-is") to both the ``sdpa`` and the ``eager`` kernels; the
  eager kernel ADDS the mask to the scores, so it must be float, not bool.
- Position ids restart per answer at Lp (the prompt's own length, not P), exactly the positions
  the naive concatenation gives, so RoPE sees identical relative offsets.
- The first token of every answer is predicted from the prompt's last column (P-1), later tokens
  from the previous token of the same answer.

Why packing rather than expanding the prompt's KV cache over candidates: one forward, one
backward, no cache object to copy/expand (the cache path needs C copies of every layer's K/V
and a second call), and gradients to the prompt come for free through ordinary attention.
Both do the same linear-layer FLOPs; packing spends a little more on attention between
answers that the mask then discards, which is small next to the MLPs at these lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from prefrec.errors import DataError
from prefrec.lm.tokens import encode_answer, encode_prompt

__all__ = ["candidate_logps", "naive_candidate_logps", "encode_cases", "packed_candidate_logps"]


def _check_shapes(prompts: Sequence[str], candidates: Sequence[Sequence[str]]) -> int:
    if len(prompts) != len(candidates):
        raise DataError(f"{len(prompts)} prompts but {len(candidates)} candidate lists",
                        where="candidate_logps", fix="pass one candidate list per prompt")
    if not prompts:
        return 0
    n = {len(c) for c in candidates}
    if len(n) != 1 or 0 in n:
        raise DataError(f"candidate lists have lengths {sorted(n)}; the result is a (B, C) matrix",
                        where="candidate_logps",
                        fix="give every prompt the same non-zero number of candidates "
                            "(call once per group of equal size)")
    return n.pop()


def encode_cases(tokenizer, prompts: Sequence[str], candidates: Sequence[Sequence[str]]
                 ) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Token ids per prompt and per (prompt, candidate) answer, by the one convention in
    :mod:`prefrec.lm.tokens`. Answers are memoised per title (titles repeat across prompts)."""
    memo: dict[str, list[int]] = {}

    def ans(t: str) -> list[int]:
        if t not in memo:
            memo[t] = encode_answer(tokenizer, t)
        return memo[t]

    p_ids = [encode_prompt(tokenizer, p) for p in prompts]
    for p, ids in zip(prompts, p_ids):
        if not ids:
            raise DataError(f"prompt {p[:40]!r} tokenizes to nothing", where="candidate_logps",
                            fix="give every case a non-empty prompt")
    a_ids = [[ans(t) for t in cands] for cands in candidates]
    return p_ids, a_ids


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    dt = p.dtype if p.dtype.is_floating_point else torch.float32
    return p.device, dt


def _pad_id(tokenizer) -> int:
    pid = getattr(tokenizer, "pad_token_id", None)
    if pid is None:
        pid = tokenizer.eos_token_id
    return int(pid)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target], in float32 whatever the model dtype (sums of ~10 bf16
    log-probs would lose the differences the preference losses feed on)."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def packed_candidate_logps(model, prompt_ids: list[list[int]], answer_ids: list[list[list[int]]],
                           pad_id: int) -> torch.Tensor:
    """Score pre-tokenized answers with one packed row per prompt. Returns (B, C) float32.

    Lower-level than :func:`candidate_logps` (no chunking, no grad handling): used by callers
    that tokenize once and score many times (reference caching, training loops)."""
    device, dtype = _device_dtype(model)
    B = len(prompt_ids)
    C = len(answer_ids[0])
    P = max(len(p) for p in prompt_ids)
    A = max(sum(len(a) for a in answers) for answers in answer_ids)
    T = P + A

    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    # segment: -1 = pad, 0 = prompt, j+1 = answer j
    seg = torch.full((B, T), -1, dtype=torch.long)
    # gather plan: for each (b, c, k) the column of the predicting logit and the target id
    max_la = max(len(a) for answers in answer_ids for a in answers)
    src = torch.zeros((B, C, max_la), dtype=torch.long)   # column index relative to P-1
    tgt = torch.full((B, C, max_la), pad_id, dtype=torch.long)
    valid = torch.zeros((B, C, max_la), dtype=torch.bool)
    for b, (p, answers) in enumerate(zip(prompt_ids, answer_ids)):
        lp = len(p)
        ids[b, P - lp:P] = torch.tensor(p)
        pos[b, P - lp:P] = torch.arange(lp)
        seg[b, P - lp:P] = 0
        col = P
        for c, a in enumerate(answers):
            la = len(a)
            ids[b, col:col + la] = torch.tensor(a)
            pos[b, col:col + la] = torch.arange(lp, lp + la)
            seg[b, col:col + la] = c + 1
            # token k of the answer is predicted at column P-1 (k = 0) or col+k-1 (k > 0);
            # stored relative to the first kept column P-1.
            src[b, c, 0] = 0
            if la > 1:
                src[b, c, 1:la] = torch.arange(col, col + la - 1) - (P - 1)
            tgt[b, c, :la] = torch.tensor(a)
            valid[b, c, :la] = True
            col += la

    q = seg.unsqueeze(2)          # (B, T, 1)
    k = seg.unsqueeze(1)          # (B, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal & (k != -1) & ((k == 0) | (k == q))
    allowed |= torch.eye(T, dtype=torch.bool)          # pad rows attend to themselves: no empty rows
    mask = torch.zeros((B, 1, T, T), dtype=dtype)
    mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)

    keep = torch.arange(P - 1, T, device=device)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                use_cache=False, logits_to_keep=keep)
    logits = out.logits                                   # (B, T-P+1, V)
    # log p(t | column) = logit[column, t] - logsumexp(logit[column, :]). The logsumexp is taken
    # ONCE per kept column (column P-1 predicts the first token of all C answers), and only the
    # C*L target logits are gathered: never a (B, C*L, V) copy of the logits (C*L >> T-P+1 when
    # one title is long, since every answer is padded to the longest), nor its gradient.
    lse = torch.logsumexp(logits.float(), dim=-1)        # (B, T-P+1)
    src_d = src.to(device).view(B, C * max_la)
    tgt_d = tgt.to(device).view(B, C * max_la)
    b_idx = torch.arange(B, device=device).unsqueeze(1)
    lp_tok = (logits[b_idx, src_d, tgt_d].float() - lse.gather(1, src_d)).view(B, C, max_la)
    return (lp_tok * valid.to(device)).sum(-1)


def candidate_logps(model, tokenizer, prompts: list[str], candidates: list[list[str]], *,
                    grad: bool = False, chunk: int | None = None) -> torch.Tensor:
    """Summed log-prob of each candidate's answer (``" " + title`` + EOS) given its prompt.

    Returns a (B, C) float32 tensor on the model's device. Each prompt is encoded once per
    forward and all its candidates are scored against it (see the module docstring); the
    result equals :func:`naive_candidate_logps` to float32 round-off, gradients included.

    ``grad=True`` keeps the graph (preference training: gradients reach the prompt's
    positions too); ``grad=False`` runs under ``torch.no_grad`` (evaluation, reference
    caching). ``chunk`` caps the number of candidates packed behind one copy of the prompt
    (memory grows with C x answer length x vocab in the logits); ``None`` packs them all.
    """
    C = _check_shapes(prompts, candidates)
    device, _ = _device_dtype(model)
    if C == 0:
        return torch.zeros((0, 0), device=device)
    if chunk is not None and chunk < 1:
        raise DataError(f"chunk={chunk}", where="candidate_logps", fix="use chunk >= 1 or None")
    p_ids, a_ids = encode_cases(tokenizer, prompts, candidates)
    pad = _pad_id(tokenizer)
    step = C if chunk is None else min(chunk, C)
    with torch.set_grad_enabled(grad):
        if step == C:
            return packed_candidate_logps(model, p_ids, a_ids, pad)
        # one row per (prompt, chunk of candidates), all in one forward
        rows_p: list[list[int]] = []
        rows_a: list[list[list[int]]] = []
        groups = list(range(0, C, step))
        for p, answers in zip(p_ids, a_ids):
            for g in groups:
                part = answers[g:g + step]
                # the last chunk may be short: pad it with copies so rows have equal C; dropped below
                rows_a.append(part + [part[-1]] * (step - len(part)))
                rows_p.append(p)
        lp = packed_candidate_logps(model, rows_p, rows_a, pad)      # (B*G, step)
        lp = lp.view(len(p_ids), len(groups) * step)
        return lp[:, :C]


def naive_candidate_logps(model, tokenizer, prompts: list[str], candidates: list[list[str]], *,
                          grad: bool = False, chunk: int | None = None) -> torch.Tensor:
    """The peer trainer's way: every (prompt + answer) concatenation is its own right-padded
    sequence, so each prompt is re-encoded C times. Same result as :func:`candidate_logps`;
    kept as the parity reference and the benchmark baseline. ``chunk`` = sequences per forward.
    """
    C = _check_shapes(prompts, candidates)
    device, _ = _device_dtype(model)
    if C == 0:
        return torch.zeros((0, 0), device=device)
    p_ids, a_ids = encode_cases(tokenizer, prompts, candidates)
    pad = _pad_id(tokenizer)
    seqs = [(p, a) for p, answers in zip(p_ids, a_ids) for a in answers]
    step = len(seqs) if chunk is None else max(1, chunk)
    outs = []
    with torch.set_grad_enabled(grad):
        for s in range(0, len(seqs), step):
            part = seqs[s:s + step]
            n = len(part)
            T = max(len(p) + len(a) for p, a in part)
            first = min(len(p) for p, _ in part) - 1       # first logit column any row needs
            ids = torch.full((n, T), pad, dtype=torch.long)
            att = torch.zeros((n, T), dtype=torch.long)
            la_max = max(len(a) for _, a in part)
            src = torch.zeros((n, la_max), dtype=torch.long)
            tgt = torch.full((n, la_max), pad, dtype=torch.long)
            valid = torch.zeros((n, la_max), dtype=torch.bool)
            for i, (p, a) in enumerate(part):
                full = p + a
                ids[i, :len(full)] = torch.tensor(full)
                att[i, :len(full)] = 1
                src[i, :len(a)] = torch.arange(len(p) - 1, len(full) - 1) - first
                tgt[i, :len(a)] = torch.tensor(a)
                valid[i, :len(a)] = True
            out = model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False,
                        logits_to_keep=torch.arange(first, T, device=device))
            logits = out.logits
            picked = logits.gather(1, src.to(device).unsqueeze(-1).expand(n, la_max, logits.shape[-1]))
            lp = (_token_logps(picked, tgt.to(device)) * valid.to(device)).sum(-1)
            outs.append(lp)
    return torch.cat(outs).view(len(p_ids), C)
