"""``prefrec dpo | sdpo | napo | recpo`` end to end on a tiny random Llama and a small S-DPO JSON
file (no downloads): the command fixes the loss, PSL over LM rewards is one config line, and a
run writes its plots. Runs in-process through :func:`prefrec.cli.main` (one import of torch)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from prefrec.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny model gains nothing from two on a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_sdpo_json(path: Path, n: int, n_candidates: int = 20, seed: int = 0) -> Path:
    """``n`` S-DPO records over a 60-title catalog, 5 history titles, ``n_candidates`` candidates."""
    r = random.Random(seed)
    recs = []
    for _ in range(n):
        ids = r.sample(range(60), 5 + n_candidates)
        hist, cands = ids[:5], ids[5:]
        recs.append({"historyList": [f"Movie {h}" for h in hist], "itemList": [f"Movie {c}" for c in cands],
                     "trueSelection": f"Movie {cands[r.randrange(n_candidates)]}"})
    path.write_text(json.dumps(recs))
    return path


def write_config(tmp_path: Path, **kw) -> Path:
    """A tiny, fast config: 'tiny' model, 8 train / 4 eval prompts, 2 optimizer steps."""
    data = write_sdpo_json(tmp_path / "records.json", 8)
    cfg = dict(model="tiny", dataset=str(data), output_dir=str(tmp_path / "run"), max_steps=2,
               train_limit=8, eval_limit=4, per_device_train_batch_size=2, per_device_eval_batch_size=4,
               learning_rate=1e-3, warmup_ratio=0.0, lora_dropout=0.0, save_final_model=False,
               ref_cache_dir=str(tmp_path / "refcache"))
    cfg.update(kw)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def rows(run: Path) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows) of ``metrics.jsonl``."""
    all_ = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in all_ if "loss" in r], [r for r in all_ if "eval_loss" in r]


@pytest.mark.parametrize("cmd", ["dpo", "sdpo", "napo", "recpo"])
def test_help_teaches_loss_knobs_and_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"prefrec {cmd} --config configs/" in out          # examples
    assert "beta" in out and "num_negatives" in out and "--resume" in out
    assert "log pi_ref" in out or "log sum" in out or "margin" in out  # what the loss is
    if cmd == "sdpo":
        assert "loss: psl" in out and "loss=psl loss_kwargs.tau=0.5" in out
    if cmd == "napo":
        assert "napo.share_ratio" in out and "napo.sasrec" in out
    if cmd == "recpo":
        assert "recpo.lambda" in out


def test_psl_over_lm_rewards_is_one_config_line_and_writes_plots(tmp_path, capsys):
    """``loss: psl`` + ``loss_kwargs`` through ``prefrec sdpo``; at step 0 policy == reference so
    every reward difference is 0 and PSL (tanh) = log K, S-DPO would be log(1 + K)."""
    cfg = write_config(tmp_path, loss="psl", loss_kwargs={"tau": 0.5}, num_negatives=3)
    assert main(["sdpo", "--config", str(cfg)]) == 0
    run = tmp_path / "run"
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["loss"] == "psl" and resolved["loss_kwargs"] == {"tau": 0.5}
    train, ev = rows(run)
    assert len(train) == 2 and ev
    assert train[0]["loss"] == pytest.approx(math.log(3), abs=1e-4)
    assert "eval_rewards/chosen" in ev[-1] and math.isfinite(ev[-1]["eval_loss"])
    # issue: plots of eval loss and preferred-item reward over steps
    for name in ("loss.png", "rewards.png"):
        png = run / "plots" / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "run directory:" in capsys.readouterr().out


def test_dpo_fixes_loss_and_one_negative(tmp_path):
    cfg = write_config(tmp_path, max_steps=1, eval_limit=0, plots=False)
    assert main(["dpo", "--config", str(cfg)]) == 0
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (resolved["loss"], resolved["num_negatives"]) == ("dpo", 1)
    train, _ = rows(tmp_path / "run")
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # -log sigmoid(0)


def test_commands_refuse_another_commands_loss(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["dpo", "--config", str(cfg), "num_negatives=3"]) == 2
    assert "num_negatives" in capsys.readouterr().err
    assert main(["dpo", "--config", str(cfg), "loss=sdpo"]) == 2
    err = capsys.readouterr().err
    assert "prefrec dpo` trains loss 'dpo'" in err and "prefrec sdpo" in err
    assert main(["sdpo", "--config", str(cfg), "loss=napo"]) == 2
    assert "prefrec napo --config" in capsys.readouterr().err
    assert main(["sdpo", "--config", str(cfg), "loss=pls"]) == 2
    assert "did you mean 'psl'" in capsys.readouterr().err
    assert main(["recpo", "--config", str(cfg), "loss_kwargs.lam=1"]) == 2
    assert "recpo.lam" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # all refused before anything was written


def test_napo_command_without_sequential_model(tmp_path):
    """NAPO with sharing off and a fixed margin needs no SASRec; the napo: section reaches the
    objective (gamma0 = 2 makes the step-0 loss larger than S-DPO's)."""
    cfg = write_config(tmp_path, max_steps=1, eval_limit=0, plots=False,
                       napo={"share_negatives": False, "alpha": 0.0, "gamma0": 2.0})
    assert main(["napo", "--config", str(cfg)]) == 0
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["loss"] == "napo" and resolved["napo"]["gamma0"] == 2.0
    train, _ = rows(tmp_path / "run")
    # reference-based (reference_free false): rewards 0 at step 0, loss = softplus(log K + gamma0)
    assert train[0]["loss"] == pytest.approx(math.log1p(3 * math.exp(2.0)), abs=1e-4)


def test_starts_from_an_sft_run_directory(tmp_path):
    """``model: <SFT run dir>`` (what configs/ml100k_*.yaml use): its final/ LoRA is merged and is
    the reference, so the cached reference = the SFT model (adapter ON) and step 0 is exactly
    S-DPO's log(1 + K)."""
    from prefrec.lm.prompts import lm_samples
    from prefrec.lm.ref_cache import load_cache
    from prefrec.lm.scoring import candidate_logps
    from prefrec.models.lm import load_trained_lm, save_trained_lm, tiny_lm

    lora = {"r": 4, "alpha": 8, "dropout": 0.0}
    sft, tok = tiny_lm(seed=5, initializer_range=0.3, lora=lora)
    with torch.no_grad():  # a trained-looking adapter: B != 0, so merged != base
        for n, p in sft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.5)
    save_trained_lm(sft, tok, tmp_path / "sft_run" / "final", base="tiny", lora=lora)
    conf = write_config(tmp_path, model=str(tmp_path / "sft_run"), max_steps=1, eval_limit=0, plots=False)
    assert main(["sdpo", "--config", str(conf)]) == 0
    train, _ = rows(tmp_path / "run")
    assert train[0]["loss"] == pytest.approx(math.log(4), abs=1e-4)
    (cache,) = (tmp_path / "refcache").glob("ref-*.safetensors")
    ref = load_cache(cache).logps
    # the config seed (default 0) also seeds the subsample of training cases
    samples = lm_samples(str(tmp_path / "records.json"), "train", limit=8, seed=0)
    model, tok = load_trained_lm(tmp_path / "sft_run")
    want = candidate_logps(model, tok, [samples[0].prompt], [samples[0].candidates])
    torch.testing.assert_close(ref[0, :20], want[0], atol=1e-3, rtol=1e-4)
    with model.disable_adapter():  # the pre-SFT base differs: the merge really happened
        base = candidate_logps(model, tok, [samples[0].prompt], [samples[0].candidates])
    assert (base[0] - ref[0, :20]).abs().max() > 1e-2


@pytest.mark.parametrize("cmd,name", [("dpo", "ml100k_dpo"), ("sdpo", "ml100k_sdpo"), ("sdpo", "lastfm_sdpo"),
                                      ("napo", "ml100k_napo"), ("recpo", "ml100k_recpo")])
def test_shipped_configs_load_with_their_command(cmd, name):
    """Every shipped config resolves under its command and starts from an SFT run directory."""
    from prefrec.commands.preference import load_command_config
    from prefrec.train.preference import validate_config

    path = Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml"
    cfg = load_command_config(cmd, str(path), [])
    validate_config(cfg)
    assert cfg.loss == ("sdpo" if cmd == "sdpo" else cmd)
    assert cfg.model.startswith("runs/") and cfg.model.endswith("_sft")
    assert cfg.output_dir == f"runs/{name}" and cfg.seed == 0
