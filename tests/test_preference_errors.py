"""Bad input to the preference trainer (issues 5 and 6): each case fails with a message that
names the key or data and the fix, through ``train_preference`` or the ``prefrec`` CLI.

Already covered elsewhere (not repeated): a cache file of another model/template at the
ref_cache level (tests/test_ref_cache.py), share_ratio / batch-of-one at the ``napo_options``
level (tests/test_napo_objective.py). Here they go through the trainer and the commands.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from prefrec.cli import main
from prefrec.errors import ConfigError, DataError
from prefrec.lm.samples import LMSample
from test_preference_cli import _one_thread, write_config  # noqa: F401 (autouse fixture)

N_ITEMS = 40


def samples(n: int, n_cand: int = 20, seed: int = 0, titles: dict[int, str] | None = None) -> list[LMSample]:
    """``n`` samples with ``n_cand`` candidates over a 40-item catalog; ``titles`` overrides titles."""
    g = torch.Generator().manual_seed(seed)
    titles = titles or {}
    out = []
    for i in range(n):
        ids = torch.randperm(N_ITEMS, generator=g)[:5 + n_cand].tolist()
        hist, cands = ids[:5], ids[5:]
        name = [titles.get(c, f"Movie {c}") for c in cands]
        out.append(LMSample(prompt=f"User watched {', '.join(f'Movie {h}' for h in hist)}. Next? Answer:",
                            history=[f"Movie {h}" for h in hist], candidates=name, target_index=0, user=i,
                            history_ids=hist, item_ids=cands))
    return out


def cfg(tmp_path: Path, name: str = "run", **kw):
    from prefrec.train.preference import PreferenceConfig

    base = dict(output_dir=str(tmp_path / name), model="tiny", max_steps=2, per_device_train_batch_size=2,
                num_negatives=2, learning_rate=1e-3, warmup_ratio=0.0, lora_dropout=0.0, plots=False,
                save_final_model=False, ref_cache_dir=str(tmp_path / "refcache"), eval_limit=0)
    base.update(kw)
    return PreferenceConfig(**base)


_TOK: list = []


def tiny(seed: int = 0, **kw):
    """A tiny random Llama (the tokenizer is loaded once per module: it dominates the cost)."""
    from prefrec.models.lm import load_tokenizer, tiny_lm

    if not _TOK:
        _TOK.append(load_tokenizer())
    return tiny_lm(_TOK[0], seed=seed, initializer_range=0.3, **kw)


# ----------------------------------------------------------------------------- issue 5
@pytest.mark.parametrize("beta", [0.0, -1.0, float("nan")])
def test_beta_must_be_positive(tmp_path, beta):
    from prefrec.train.preference import train_preference

    with pytest.raises(ConfigError) as e:
        train_preference(cfg(tmp_path, beta=beta), train_samples=samples(2))
    msg = str(e.value)
    assert f"beta={beta} must be a finite number > 0" in msg and "beta: 1.0" in msg
    assert not (tmp_path / "run").exists()


def test_beta_through_the_cli(tmp_path, capsys):
    conf = write_config(tmp_path)
    assert main(["sdpo", "--config", str(conf), "beta=0"]) == 2
    err = capsys.readouterr().err
    assert "beta: beta=0.0 must be a finite number > 0" in err and "Fix:" in err


def test_more_negatives_than_candidates(tmp_path):
    """20 candidates leave 19 negatives; K = 20 is refused with the bound, before any model load."""
    from prefrec.train.preference import train_preference

    with pytest.raises(ConfigError) as e:
        train_preference(cfg(tmp_path, num_negatives=20, model="no-such-model"), train_samples=samples(2))
    msg = str(e.value)
    assert "num_negatives=20 but sample 0 has only 19 non-target candidates" in msg
    assert "num_negatives <= 19" in msg


def test_accelerate_cpu_single_process_is_reported(tmp_path, monkeypatch, caplog):
    """``accelerate launch --cpu --num_processes 2`` runs ONE process (it sets MASTER_PORT but no
    RANK): the trainer says how to get N processes instead of silently training alone."""
    import logging

    from prefrec.train.preference import train_preference

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with caplog.at_level(logging.WARNING, logger="prefrec.train.preference"), pytest.raises(ConfigError):
        train_preference(cfg(tmp_path, num_negatives=20, model="no-such-model"), train_samples=samples(2))
    assert "accelerate launch --multi_gpu --num_processes N -m prefrec.cli sdpo" in caplog.text


def test_answer_that_tokenizes_to_nothing(tmp_path):
    from prefrec.train.preference import train_preference

    s = samples(3)
    s[1].candidates[4] = "   "
    model, tok = tiny()
    with pytest.raises(DataError) as e:
        train_preference(cfg(tmp_path), model=model, tokenizer=tok, train_samples=s)
    msg = str(e.value)
    assert "sample 1: candidate title '   ' tokenizes to nothing" in msg and "non-empty title" in msg


def test_empty_title_in_records_through_the_cli(tmp_path, capsys):
    import json

    conf = write_config(tmp_path)
    data = tmp_path / "records.json"
    recs = json.loads(data.read_text())
    recs[2]["itemList"][5] = ""
    data.write_text(json.dumps(recs))
    assert main(["sdpo", "--config", str(conf)]) == 2
    assert "empty" in capsys.readouterr().err


def test_reference_cache_of_another_model_is_not_reused(tmp_path):
    """Another SFT model in the same cache folder gets its own cache (nothing reused); pointing
    ``ref_cache`` at the first model's file is refused, naming what changed."""
    from prefrec.lm.ref_cache import StaleCacheError
    from prefrec.train.preference import train_preference

    data = samples(2)
    m0, tok = tiny(seed=0)
    r0 = train_preference(cfg(tmp_path, "a", max_steps=1), model=m0, tokenizer=tok, train_samples=data)
    files = sorted((tmp_path / "refcache").glob("ref-*.safetensors"))
    assert len(files) == 1
    m1, tok = tiny(seed=1)
    with pytest.raises(StaleCacheError, match="different model") as e:
        train_preference(cfg(tmp_path, "b", max_steps=1, ref_cache=str(files[0])), model=m1, tokenizer=tok,
                         train_samples=data)
    assert str(files[0]) in str(e.value) or files[0].name in str(e.value)
    m1, tok = tiny(seed=1)
    r1 = train_preference(cfg(tmp_path, "c", max_steps=1), model=m1, tokenizer=tok, train_samples=data)
    assert len(list((tmp_path / "refcache").glob("ref-*.safetensors"))) == 2
    import json

    k0 = json.loads((r0.run_dir / "summary.json").read_text())["ref_cache"]["train"]
    k1 = json.loads((r1.run_dir / "summary.json").read_text())["ref_cache"]["train"]
    assert k0 != k1


def test_nan_loss_names_step_and_batch(tmp_path):
    """One input-embedding row set to NaN (untied head) poisons only the prompts holding that
    token: training stops at the first optimizer step whose batch holds such a prompt."""
    from prefrec.lm.tokens import encode_answer, encode_prompt
    from prefrec.train.preference import _epoch_order, train_preference

    data = samples(8)
    data[5].prompt = data[5].prompt.replace("User watched", "Zanzibar user watched")
    model, tok = tiny(tie_word_embeddings=False)
    ids = [set(encode_prompt(tok, s.prompt)) | {t for c in s.candidates for t in encode_answer(tok, c)}
           for s in data]
    only5 = sorted(ids[5] - set().union(*(x for i, x in enumerate(ids) if i != 5)))
    assert only5, "the marker word must give a token no other sample has"
    with torch.no_grad():
        model.get_input_embeddings().weight[only5[0]] = float("nan")
    order = _epoch_order(8, 42, 0, 2)
    micro = order.index(5) // 2
    with pytest.raises(Exception) as e:
        train_preference(cfg(tmp_path, max_steps=4, reference_free=True, seed=42), model=model, tokenizer=tok,
                         train_samples=data)
    from prefrec.train.preference import TrainingError

    assert isinstance(e.value, TrainingError)
    msg = str(e.value)
    assert f"the loss is not finite (nan) at optimizer step {micro + 1}, epoch 0, micro-batch {micro}" in msg
    assert f"(samples {order[micro * 2:micro * 2 + 2]})" in msg and "--resume" in msg
    # the steps before it trained and were logged with finite losses
    import json

    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, micro + 1))
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_missing_or_unfinished_sft_run(tmp_path, monkeypatch, capsys):
    """``model: runs/<sft>`` that does not exist is not mistaken for a hub id; a run without
    final/ says to let SFT finish."""
    monkeypatch.chdir(tmp_path)
    conf = write_config(tmp_path)
    assert main(["sdpo", "--config", str(conf), "model=runs/ml100k_sft"]) == 2
    err = capsys.readouterr().err
    assert "model 'runs/ml100k_sft': no such run directory" in err and "prefrec sft" in err
    (tmp_path / "runs" / "half_sft" / "checkpoints").mkdir(parents=True)
    assert main(["sdpo", "--config", str(conf), "model=runs/half_sft"]) == 2
    assert "holds no trained model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- issue 6
@pytest.mark.parametrize("ratio", ["0", "-0.5", "1.5"])
def test_share_ratio_outside_unit_interval(tmp_path, capsys, ratio):
    conf = write_config(tmp_path)
    assert main(["napo", "--config", str(conf), f"napo.share_ratio={ratio}", "napo.sasrec=x"]) == 2
    err = capsys.readouterr().err
    assert f"napo.share_ratio: share_ratio={float(ratio)} must be in (0, 1]" in err
    assert "share_negatives: false" in err


def test_batch_of_one_with_sharing(tmp_path, capsys):
    conf = write_config(tmp_path)
    assert main(["napo", "--config", str(conf), "per_device_train_batch_size=1", "napo.sasrec=x"]) == 2
    err = capsys.readouterr().err
    assert "negative sharing needs at least 2 examples per global batch, got 1" in err
    assert "per_device_train_batch_size" in err


def test_recpo_needs_ratings(tmp_path, capsys):
    """S-DPO records carry no star ratings: RecPO's preference score cannot exist."""
    conf = write_config(tmp_path)
    assert main(["recpo", "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "dataset 'records' has no ratings" in err and "ml-100k" in err
    assert not (tmp_path / "run").exists()


def test_sequential_model_of_another_split(tmp_path):
    """A SASRec whose recorded training split differs from this run's is refused (it may have
    seen the evaluation users), through the trainer."""
    from prefrec.lm.napo import NapoObjective, NapoOptions
    from prefrec.models.sasrec import SASRec, SASRecConfig, save_sasrec
    from prefrec.train.preference import train_preference

    save_sasrec(SASRec(SASRecConfig(n_items=N_ITEMS, hidden=8, blocks=1, max_len=5, dropout=0.0)),
                tmp_path / "sas", {"train_split": "0000000000000000"})
    case = SimpleNamespace(user=0, history=(1, 2), target=3)
    obj = NapoObjective(NapoOptions(share_ratio=1.0), sasrec=tmp_path / "sas", train_cases=lambda: [case])
    model, tok = tiny()
    with pytest.raises(DataError) as e:
        train_preference(cfg(tmp_path, reference_free=True), model=model, tokenizer=tok, train_samples=samples(4),
                         objective=obj)
    msg = str(e.value)
    assert "trained on another split (fingerprint 0000000000000000" in msg and "prefrec baseline" in msg
