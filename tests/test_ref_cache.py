"""Reference log-prob cache: parity with recomputation, reuse, and stale caches detected."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from prefrec.lm.ref_cache import (StaleCacheError, cache_key_parts, compute_ref_logps,  # noqa: E402
                                  load_cache, load_or_compute, model_fingerprint)
from prefrec.lm.samples import LMSample  # noqa: E402
from prefrec.lm.scoring import naive_candidate_logps  # noqa: E402
from prefrec.models.lm import apply_lora, tiny_lm  # noqa: E402

TITLES = ["Toy Story (1995)", "Heat (1995)", "Casino", "Fargo (1996)", "Star Wars (1977)", "Alien",
          "Return of the Jedi (1983)", "Babe", "Clerks", "Se7en"]


def make_samples(n: int = 5, c: int = 6, template: str = "Watched {h}. Next movie? Answer:"):
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        perm = torch.randperm(len(TITLES), generator=g).tolist()
        cands = [TITLES[j] for j in perm[:c]]
        hist = [TITLES[j] for j in perm[c:c + 3]]
        out.append(LMSample(prompt=template.format(h=", ".join(hist)), history=hist, candidates=cands,
                            target_index=i % c))
    return out


@pytest.fixture(scope="module")
def model_tok():
    model, tok = tiny_lm(initializer_range=0.3, seed=1)
    return model.eval(), tok


def test_cache_equals_naive_recomputation(model_tok, tmp_path):
    model, tok = model_tok
    samples = make_samples()
    cache = load_or_compute(model, tok, samples, cache_dir=tmp_path, batch_size=2)
    naive = naive_candidate_logps(model, tok, [s.prompt for s in samples], [s.candidates for s in samples])
    torch.testing.assert_close(cache.logps, naive, atol=1e-4, rtol=1e-5)
    # round trip through disk, and the gather used by the trainer
    again = load_cache(cache.path, expected=cache.parts)
    torch.testing.assert_close(again.logps, cache.logps)
    cols = torch.tensor([[s.target_index, (s.target_index + 1) % 6] for s in samples[:3]])
    torch.testing.assert_close(again.gather([0, 1, 2], cols), naive[torch.arange(3)[:, None], cols])
    meta = json.loads(cache.path.with_suffix(".json").read_text())
    assert set(meta["parts"]) == {"model", "data", "tokenizer", "format"}


def test_reference_is_policy_with_adapters_disabled(model_tok, tmp_path):
    """A PEFT policy whose LoRA is non-zero still caches the base model's log-probs, and its
    fingerprint equals the plain model's (LoRA tensors are not part of the reference)."""
    model, tok = model_tok
    base_fp = model_fingerprint(model)
    import copy

    peft = apply_lora(copy.deepcopy(model), {"dropout": 0.0})
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    assert model_fingerprint(peft) == base_fp
    samples = make_samples(3)
    ref = compute_ref_logps(peft, tok, samples)
    base = compute_ref_logps(model, tok, samples)
    torch.testing.assert_close(ref, base, atol=1e-5, rtol=1e-5)
    pol = naive_candidate_logps(peft, tok, [s.prompt for s in samples], [s.candidates for s in samples])
    assert (pol - base).abs().max() > 1e-3  # the adapter does change the policy


def test_reused_across_runs_without_recomputing(model_tok, tmp_path, monkeypatch):
    model, tok = model_tok
    samples = make_samples()
    first = load_or_compute(model, tok, samples, cache_dir=tmp_path)
    import prefrec.lm.ref_cache as rc

    calls = []
    real = rc.compute_ref_logps
    monkeypatch.setattr(rc, "compute_ref_logps", lambda *a, **k: calls.append(k.get("rows")) or real(*a, **k))
    second = load_or_compute(model, tok, samples, cache_dir=tmp_path, verify=2)
    assert second.path == first.path
    assert calls == [[0, 1]]  # only the 2-row parity check, not the whole table
    torch.testing.assert_close(second.logps, first.logps)


def test_other_model_or_template_is_detected(model_tok, tmp_path):
    model, tok = model_tok
    samples = make_samples()
    cache = load_or_compute(model, tok, samples, cache_dir=tmp_path)
    other, _ = tiny_lm(tok, initializer_range=0.3, seed=2)
    with pytest.raises(StaleCacheError, match="different model"):
        load_or_compute(other, tok, samples, path=cache.path)
    # another prompt template: same items, different prompt text
    templ = make_samples(template="History: {h}. Recommend one. Answer:")
    with pytest.raises(StaleCacheError, match="different data"):
        load_or_compute(model, tok, templ, path=cache.path)
    # in a cache folder, another model maps to another file (never the old one)
    c2 = load_or_compute(other, tok, samples, cache_dir=tmp_path)
    assert c2.path != cache.path and c2.key != cache.key
    assert not torch.allclose(c2.logps, cache.logps)


def test_tampered_cache_fails_the_parity_check(model_tok, tmp_path):
    """Same key but different numbers (e.g. scoring code changed): the re-scored rows disagree."""
    from prefrec.lm.ref_cache import save_cache

    model, tok = model_tok
    samples = make_samples()
    cache = load_or_compute(model, tok, samples, cache_dir=tmp_path)
    cache.logps[0, 0] += 1.0
    save_cache(cache, cache.path)
    with pytest.raises(StaleCacheError, match="sample 0"):
        load_or_compute(model, tok, samples, cache_dir=tmp_path)


def test_key_parts_change_with_each_component(model_tok):
    model, tok = model_tok
    s = make_samples()
    a = cache_key_parts(model, tok, s)
    s2 = make_samples()
    s2[1].candidates[0] = "Babe: Pig in the City"
    b = cache_key_parts(model, tok, s2)
    assert a["data"] != b["data"] and a["model"] == b["model"] and a["tokenizer"] == b["tokenizer"]
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    try:
        assert cache_key_parts(model, tok, s)["model"] != a["model"]
    finally:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] -= 1e-3


def test_a_torn_cache_file_is_rebuilt_or_named(model_tok, tmp_path):
    """A cache file cut short (a kill mid-write on a file system without atomic rename, a copy
    gone wrong): the automatic cache is computed again; an explicit ref_cache path is refused with
    a message naming the file, never a traceback."""
    from prefrec.lm import ref_cache as rc

    model, tok = model_tok
    samples = make_samples(2)
    first = rc.load_or_compute(model, tok, samples, cache_dir=tmp_path, verify=0)
    f = rc.cache_path(tmp_path, first.key)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    again = rc.load_or_compute(model, tok, samples, cache_dir=tmp_path, verify=0)
    torch.testing.assert_close(again.logps, first.logps, equal_nan=True)
    f.write_bytes(b"not a safetensors file")
    with pytest.raises(rc.CorruptCacheError, match="cannot be read") as e:
        rc.load_or_compute(model, tok, samples, path=f, verify=0)
    assert e.value.where == str(f) and "delete the file" in e.value.fix
