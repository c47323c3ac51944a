"""Reference log-probs, computed once per (reference model, data, tokenizer) and cached on disk.

S-DPO's implicit reward is ``beta * (log pi_theta(y|x) - log pi_ref(y|x))``. The peer trainer
runs a frozen reference model over every (prompt, answer) concatenation at every step; but
``pi_ref`` never changes, so ``log pi_ref`` of ALL 20 candidates of every example is computed
here once (no grad, shared-prefix fast path :func:`prefrec.lm.scoring.candidate_logps`) and
read back by index afterwards. Because every candidate is cached, negatives can be re-sampled
every epoch at no cost, and the reference model need not stay in memory at all during training
(full fine-tuning works the same as LoRA).

Staleness is the danger of any cache: a cache made by another SFT model, another tokenizer or
other prompts would give wrong rewards without any error. So a cache is keyed by a hash of

* the reference model: architecture config + a digest of every weight tensor (LoRA weights of
  a PEFT wrapper excluded, adapters must be disabled or merged when the cache is built),
* the data: every sample's prompt and candidate titles, in order (the prompt template is part
  of the prompt text, so another template changes the key),
* the tokenizer and the answer convention: vocabulary digest, special tokens, and the ids of a
  probe prompt/answer encoded the way :mod:`prefrec.lm.tokens` does.

Files: ``<dir>/ref-<key>.safetensors`` (``logps`` (N, C) float32, ``n_candidates`` (N,)) plus
``ref-<key>.json`` holding every component of the key; both written atomically. Loading an
explicit file whose components differ from the current ones raises :class:`StaleCacheError`
naming what changed. A cheap parity check (re-scoring a couple of rows) guards against
changes the key cannot see, e.g. a change of the scoring code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefrec import distributed
from prefrec.checkpoint import atomic_write_bytes
from prefrec.errors import PrefrecError

log = logging.getLogger(__name__)

__all__ = ["RefCache", "StaleCacheError", "cache_key_parts", "model_fingerprint", "data_fingerprint",
           "tokenizer_fingerprint", "compute_ref_logps", "load_or_compute", "save_cache", "load_cache"]

FORMAT_VERSION = 2  # 2: weights summarised on their device (model_fingerprint)
# Bumped whenever the scoring convention (answer = " " + title + EOS, summed log-probs) changes.
SCORING_CONVENTION = "answer=' '+title+EOS;sum-logp;v1"


class StaleCacheError(PrefrecError):
    """A reference cache was built for another model, data set or tokenizer."""


@dataclass
class RefCache:
    """Reference log-probs of every candidate of every sample.

    ``logps[i, j]`` = ``log pi_ref(candidate j | prompt i)`` (NaN past ``n_candidates[i]``).
    """

    logps: torch.Tensor
    n_candidates: torch.Tensor
    key: str
    parts: dict[str, str]
    path: Path | None = None

    def gather(self, rows: torch.Tensor | Sequence[int], cols: torch.Tensor) -> torch.Tensor:
        """``logps[rows[b], cols[b, j]]`` -> (B, J): reference log-probs of the chosen candidates."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return self.logps[rows.unsqueeze(1), cols]


# ------------------------------------------------------------------------------------ fingerprints
class CorruptCacheError(StaleCacheError):
    """A cache file that cannot be read (a torn write, another file type)."""


def _digest_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    """Shape, dtype, float64 sum and norm (computed where the tensor lives) and a strided sample
    of <= 1024 values: enough to tell a fine-tuned model from its base, without copying every
    weight of a multi-GB model to the host on every rank."""
    flat = t.detach().reshape(-1)
    h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
    if flat.numel() == 0:
        return
    if not (flat.is_floating_point() or flat.dtype in (torch.int8, torch.uint8, torch.int32, torch.int64)):
        flat = flat.view(torch.uint8)
    stats = torch.stack([torch.sum(flat, dtype=torch.float64),
                         torch.linalg.vector_norm(flat.to(torch.float64) if not flat.is_floating_point()
                                                  else flat, dtype=torch.float64)])
    sample = flat[::max(1, flat.numel() // 1024)][:1024].to("cpu", torch.float64)
    h.update(stats.cpu().numpy().tobytes())
    h.update(sample.numpy().tobytes())


def model_fingerprint(model) -> str:
    """Digest of the reference model: its config and a summary of every non-LoRA weight.

    LoRA tensors are skipped because the reference is the model with adapters disabled; the
    ``.base_layer`` part PEFT adds to wrapped weights is stripped so a plain model and the same
    model wrapped in a fresh adapter have the same fingerprint. Each weight is summarised on its
    own device (:func:`_digest_tensor`), so a 7B model on a GPU is not copied to the host.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    h = hashlib.blake2b(digest_size=16)
    cfg = getattr(inner, "config", None)
    if cfg is not None:
        d = cfg.to_dict()
        for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
                  "_attn_implementation_autoset", "_commit_hash", "pad_token_id"):
            d.pop(k, None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    for name, t in sorted(inner.state_dict().items()):
        if "lora_" in name:
            continue
        h.update(name.replace(".base_layer.", ".").encode())
        _digest_tensor(h, t)
    return h.hexdigest()


def data_fingerprint(samples: Sequence[Any]) -> str:
    """Digest of every sample's prompt and candidate titles (order matters: rows are indices)."""
    h = hashlib.blake2b(digest_size=16)
    for s in samples:
        h.update(json.dumps([s.prompt, list(s.candidates)], ensure_ascii=False).encode())
        h.update(b"\x00")
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """Digest of the vocabulary, special tokens and of how a probe prompt/answer is encoded."""
    from prefrec.lm.tokens import encode_answer, encode_prompt

    h = hashlib.blake2b(digest_size=16)
    h.update(type(tokenizer).__name__.encode())
    vocab = sorted(tokenizer.get_vocab().items())
    h.update(json.dumps(vocab, ensure_ascii=False).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id]).encode())
    probe_p = encode_prompt(tokenizer, "Watched: Toy Story, Heat. Answer:")
    probe_a = encode_answer(tokenizer, "Star Wars (1977)")
    h.update(json.dumps([probe_p, probe_a, SCORING_CONVENTION]).encode())
    return h.hexdigest()


def cache_key_parts(model, tokenizer, samples: Sequence[Any]) -> dict[str, str]:
    """The components of a cache key; each is compared separately so errors can say what changed."""
    return {"model": model_fingerprint(model), "data": data_fingerprint(samples),
            "tokenizer": tokenizer_fingerprint(tokenizer), "format": str(FORMAT_VERSION)}


def _key(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ compute
def _reference_context(model):
    """Adapters off while scoring the reference: a PEFT policy's reference is its base."""
    import contextlib

    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def compute_ref_logps(model, tokenizer, samples: Sequence[Any], *, batch_size: int = 4,
                      rows: Sequence[int] | None = None, chunk: int | None = None) -> torch.Tensor:
    """Reference log-probs (N, Cmax) of all candidates of ``samples`` (or only ``rows``; the
    other rows stay 0), no grad, adapters disabled, model in eval mode (no dropout).

    Samples are grouped by candidate count because :func:`candidate_logps` returns a matrix.
    """
    from prefrec.lm.scoring import candidate_logps

    n = len(samples)
    cmax = max((len(s.candidates) for s in samples), default=0)
    out = torch.zeros((n, cmax), dtype=torch.float32)
    todo = list(range(n)) if rows is None else list(rows)
    groups: dict[int, list[int]] = {}
    for i in todo:
        groups.setdefault(len(samples[i].candidates), []).append(i)
    was_training = model.training
    model.eval()
    from prefrec.progress import Progress

    try:
        with _reference_context(model), torch.no_grad(), Progress("reference log-probs", len(todo),
                                                                   unit="samples", logger=log) as bar:
            for c, idx in groups.items():
                for s in range(0, len(idx), batch_size):
                    part = idx[s:s + batch_size]
                    lp = candidate_logps(model, tokenizer, [samples[i].prompt for i in part],
                                         [list(samples[i].candidates) for i in part], grad=False,
                                         chunk=chunk)
                    out[part, :c] = lp.float().cpu()
                    bar(len(part))
    finally:
        model.train(was_training)
    return out


# ------------------------------------------------------------------------------------ disk
def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"ref-{key}.safetensors"


def save_cache(cache: RefCache, path: str | Path) -> Path:
    """Write ``path`` (safetensors) and its ``.json`` metadata sidecar, each atomically."""
    from safetensors.torch import save

    path = Path(path)
    meta = {"key": cache.key, **{f"part.{k}": v for k, v in cache.parts.items()}}
    blob = save({"logps": cache.logps.contiguous(), "n_candidates": cache.n_candidates.contiguous()},
                metadata=meta)
    atomic_write_bytes(path, blob)
    side = {"key": cache.key, "parts": cache.parts, "rows": int(cache.logps.shape[0]),
            "max_candidates": int(cache.logps.shape[1]), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(side, indent=1).encode())
    cache.path = path
    return path


def load_cache(path: str | Path, expected: dict[str, str] | None = None) -> RefCache:
    """Read a cache file; with ``expected`` key parts, raise :class:`StaleCacheError` naming every
    component (model / data / tokenizer / format) that differs."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise StaleCacheError(f"reference cache {str(path)!r} does not exist", where="ref_cache",
                              fix="remove the ref_cache setting to build the cache automatically")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        tensors["logps"], tensors["n_candidates"]  # noqa: B018 - both must be there
    except Exception as e:  # noqa: BLE001 - torn write, another file type, missing tensors
        raise CorruptCacheError(f"the reference cache cannot be read ({type(e).__name__}: {str(e)[:120]})",
                                where=str(path), fix="delete the file; it is rebuilt automatically") from None
    parts = {k[5:]: v for k, v in meta.items() if k.startswith("part.")}
    if expected is not None:
        what = {"model": "the reference model's weights or config (another SFT run or base model?)",
                "data": "the training samples' prompts or candidates (another data set, split, limit, "
                        "seed or prompt template?)",
                "tokenizer": "the tokenizer or the answer tokenization convention",
                "format": "the cache format version",
                "precision": "the mixed precision it was computed under (fp32 / bf16 / fp16)"}
        diff = [k for k in expected if parts.get(k) != expected[k]]
        if diff:
            raise StaleCacheError(
                "the reference log-prob cache was built for a different " + " and ".join(diff) + ": "
                + "; ".join(what.get(k, k) for k in diff) + ". Reusing it would give wrong rewards",
                where=str(path),
                fix="delete the file (it is rebuilt automatically) or point ref_cache at the cache "
                    "of this model and data")
    return RefCache(logps=tensors["logps"], n_candidates=tensors["n_candidates"],
                    key=meta.get("key", ""), parts=parts, path=path)


# ------------------------------------------------------------------------------------ entry point
def verify_rows(cache: RefCache, model, tokenizer, samples: Sequence[Any], rows: Sequence[int],
                atol: float = 1e-3) -> None:
    """Re-score ``rows`` and compare with the cache: catches what the key cannot (scoring code
    changes, a model silently changed in memory after fingerprinting)."""
    rows = [r for r in rows if 0 <= r < len(samples)]
    if not rows:
        return
    fresh = compute_ref_logps(model, tokenizer, samples, rows=rows)
    for r in rows:
        c = len(samples[r].candidates)
        err = (fresh[r, :c] - cache.logps[r, :c]).abs().max().item()
        if not err <= atol:
            raise StaleCacheError(
                f"cached reference log-probs of sample {r} differ from a fresh computation by {err:.3g}",
                where=str(cache.path or "reference cache"),
                fix="delete the cache file so it is rebuilt (the scoring code or model changed)")


def load_or_compute(model, tokenizer, samples: Sequence[Any], *, cache_dir: str | Path | None = None,
                    path: str | Path | None = None, batch_size: int = 4, verify: int = 2,
                    parts: dict[str, str] | None = None) -> RefCache:
    """The reference log-probs of ``samples``: from disk when a matching cache exists, else
    computed (and written when ``cache_dir`` or ``path`` is given).

    ``path`` = an explicit cache file, which MUST match (else :class:`StaleCacheError`);
    ``cache_dir`` = a folder of caches named by key, so another model/data/tokenizer simply
    maps to another file. Under ``torch.distributed`` every rank scores its share of rows
    (row i on rank i % world), the shares are summed with one all-reduce, rank 0 writes the
    file, and all ranks return the same table. ``verify`` rows are re-scored against a cache
    read from disk.
    """
    parts = parts or cache_key_parts(model, tokenizer, samples)
    key = _key(parts)
    target = Path(path) if path is not None else (cache_path(cache_dir, key) if cache_dir is not None else None)
    world, rank = distributed.world_rank()
    if target is not None and (target.exists() or path is not None):
        try:
            cache = load_cache(target, expected=parts)
        except CorruptCacheError as e:
            if path is not None:  # the user named this file: say so rather than overwrite it
                raise
            log.warning("%s; computing it again", e)
        else:
            if verify:
                verify_rows(cache, model, tokenizer, samples, list(range(min(verify, len(samples)))))
            log.info("reference log-probs: reusing %s", target)
            return cache
    t0 = time.perf_counter()
    logps = compute_ref_logps(model, tokenizer, samples, batch_size=batch_size,
                              rows=range(rank, len(samples), world))
    distributed.all_reduce_sum(logps)  # each row is non-zero on exactly one rank
    ncand = torch.tensor([len(s.candidates) for s in samples], dtype=torch.long)
    for i, c in enumerate(ncand.tolist()):
        logps[i, c:] = float("nan")
    cache = RefCache(logps=logps, n_candidates=ncand, key=key, parts=parts)
    log.info("reference log-probs of %d samples x %d candidates in %.1f s", len(samples),
             logps.shape[1] if logps.dim() == 2 else 0, time.perf_counter() - t0)
    if target is not None:
        if rank == 0:
            save_cache(cache, target)
        distributed.barrier()
        cache.path = target
    return cache
