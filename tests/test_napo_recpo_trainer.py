"""NAPO and RecPO through the real preference trainer (tiny Llama, a few steps, no downloads)."""

from __future__ import annotations

import json

import pytest
import torch

from prefrec.lm.samples import LMSample

N_ITEMS = 40


def _samples(n: int, seed: int, with_scores: bool = False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randperm(N_ITEMS, generator=g)[:11].tolist()
        hist, cands = ids[:5], ids[5:]
        extra = {}
        if with_scores:
            extra["recpo_scores"] = [5.0 / (1 + j) ** 0.5 for j in range(len(cands))]
        out.append(LMSample(prompt=f"User watched {', '.join(f'Movie {h}' for h in hist)}. Next? Answer:",
                            history=[f"Movie {h}" for h in hist], candidates=[f"Movie {c}" for c in cands],
                            target_index=0, user=i, history_ids=hist, item_ids=cands, extra=extra))
    return out


def _sasrec():
    from prefrec.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=N_ITEMS, hidden=8, blocks=1, max_len=5, dropout=0.0))


def _cfg(tmp_path, name, **kw):
    from prefrec.train.preference import PreferenceConfig

    base = dict(output_dir=str(tmp_path / name), model="tiny", max_steps=2, per_device_train_batch_size=4,
                per_device_eval_batch_size=4, num_negatives=2, learning_rate=1e-3, plots=False,
                save_final_model=False, warmup_ratio=0.0, ref_cache_dir=str(tmp_path / "refcache"))
    base.update(kw)
    return PreferenceConfig(**base)


@pytest.mark.slow
def test_napo_objective_trains_and_resumes_running_mean(tmp_path):
    from prefrec.lm.napo import NapoObjective, NapoOptions
    from prefrec.models.lm import tiny_lm
    from prefrec.train.preference import train_preference

    cfg = _cfg(tmp_path, "napo", reference_free=True)
    model, tok = tiny_lm(seed=0, initializer_range=0.3)
    obj = NapoObjective(NapoOptions(share_ratio=1.0), sasrec=_sasrec())
    res = train_preference(cfg, model=model, tokenizer=tok, train_samples=_samples(8, 1),
                           eval_samples=_samples(4, 2), objective=obj)
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert len(train) == 2
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert all("napo/gamma" in r and "napo/shared_k" in r for r in train)  # objective stats are logged
    assert obj.running_mean.steps == 2  # one update per training micro-batch, none from evaluation
    state = json.loads(sorted((res.run_dir / "checkpoints").glob("step-*/state.json"))[-1].read_text())
    assert state["objective"]["running_mean"]["steps"] == 2


@pytest.mark.slow
def test_recpo_objective_trains_with_reference(tmp_path):
    from prefrec.lm.recpo import RecpoObjective, RecpoOptions
    from prefrec.models.lm import tiny_lm
    from prefrec.train.preference import train_preference

    cfg = _cfg(tmp_path, "recpo")
    model, tok = tiny_lm(seed=0, initializer_range=0.3)
    res = train_preference(cfg, model=model, tokenizer=tok, train_samples=_samples(8, 1, with_scores=True),
                           eval_samples=_samples(4, 2), objective=RecpoObjective(RecpoOptions(lam=1.0)))
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    assert len(train) == 2
    # policy == reference at step 0 and every margin >= lambda: loss > S-DPO's log(1 + K)
    import math

    assert train[0]["loss"] > math.log(3)
