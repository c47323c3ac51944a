"""LM loading: tiny random Llama models, LoRA, errors, trained-model round trip, SmolLM2 cache."""

from __future__ import annotations

import time

import pytest
import torch

from prefrec.errors import ConfigError
from prefrec.models.lm import (LLAMA_PROJECTIONS, cache_root, load_lm, load_tokenizer, load_trained_lm,
                               resolve_lm, save_trained_lm, tiny_lm)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_tiny_lm_uses_smollm2_tokenizer(tok):
    model, t = tiny_lm(tok)
    assert model.config.vocab_size == len(tok)
    assert t.pad_token_id is not None and t.eos_token_id is not None
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    ids = tok(["Answer: Toy Story"], return_tensors="pt")
    out = model(**ids)
    assert out.logits.shape == (1, ids["input_ids"].shape[1], len(tok))


def test_tiny_lm_is_deterministic_per_seed(tok):
    a, _ = tiny_lm(tok, seed=3)
    b, _ = tiny_lm(tok, seed=3)
    c, _ = tiny_lm(tok, seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_lora_defaults_target_seven_projections(tok):
    model, _ = tiny_lm(tok, lora={})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    hit = {n.split(".")[-4] for n in trainable if "lora_A" in n}
    assert hit == set(LLAMA_PROJECTIONS)
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.1)


def test_lora_options_and_unknown_key(tok):
    model, _ = tiny_lm(tok, lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj"]})
    assert model.peft_config["default"].r == 2
    with pytest.raises(ConfigError, match="unknown LoRA option"):
        tiny_lm(tok, lora={"rank": 2})


@pytest.mark.parametrize("bad", ["/no/such/model", "./missing-folder", "missing.gguf", "not-a-builtin"])
def test_missing_model_is_config_error(bad):
    with pytest.raises(ConfigError) as e:
        load_lm(bad)
    msg = str(e.value)
    assert bad in msg and "smollm2-135m" in msg and "local folder" in msg and "HF hub id" in msg


def test_hf_id_passes_through():
    assert resolve_lm("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


@pytest.mark.parametrize("lora", [None, {"r": 2, "alpha": 4, "dropout": 0.0}])
def test_trained_roundtrip(tmp_path, tok, lora):
    model, _ = tiny_lm(tok, lora=lora)
    with torch.no_grad():  # make the adapter non-trivial so a lost adapter would show
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    model.eval()
    save_trained_lm(model, tok, tmp_path / "run" / "final", base="tiny", lora=lora)
    loaded, tok2 = load_trained_lm(tmp_path / "run")
    ids = tok(["history: Heat, Fargo. Answer: Babe"], return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, loaded(**ids).logits, atol=1e-5)
    assert tok2.pad_token_id == tok.pad_token_id
    if lora:
        with loaded.disable_adapter(), torch.no_grad():
            ref = loaded(**ids).logits
        assert not torch.allclose(ref, model(**ids).logits, atol=1e-4)


def test_load_trained_lm_missing(tmp_path):
    with pytest.raises(ConfigError, match="holds no trained model"):
        load_trained_lm(tmp_path)


@pytest.mark.slow
def test_smollm2_loads_from_safetensors_cache():
    """First call ever converts the GGUF (~25-30 s); later calls read the cache in seconds."""
    model, t = load_lm()  # converts once if needed
    folder = next(cache_root().glob("smollm2-135m-*/model.safetensors")).parent
    assert (folder / "config.json").exists() and not list(cache_root().glob(".tmp-*"))
    t0 = time.perf_counter()
    model, t = load_lm()
    assert time.perf_counter() - t0 < 30
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert t.eos_token == "<|im_end|>" and t.pad_token_id is not None
    ids = t(["I watched Heat and Fargo. Next movie? Answer:"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()


def test_for_inference_merges_lora_with_same_scores():
    """Evaluation merges a LoRA adapter into the weights: candidate log-probs must not change."""
    import copy

    from prefrec.lm.scoring import candidate_logps
    from prefrec.models.lm import for_inference, tiny_lm

    model, tok = tiny_lm(seed=3, initializer_range=0.3, lora={"r": 4, "alpha": 8, "dropout": 0.0})
    with torch.no_grad():  # a trained-looking adapter (B != 0)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.3)
    model.eval()
    prompts, cands = ["User watched A, B. Pick one:"], [["Alpha", "Beta Gamma", "Delta"]]
    want = candidate_logps(model, tok, prompts, cands)
    merged = for_inference(copy.deepcopy(model))
    assert not hasattr(merged, "merge_and_unload") and merged.config.use_cache
    torch.testing.assert_close(candidate_logps(merged, tok, prompts, cands), want, atol=1e-4, rtol=1e-5)
