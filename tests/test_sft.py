"""SFT trainer on a tiny random Llama (SmolLM2 tokenizer, no downloads): the loss is the answer
tokens' cross-entropy only, padding does not change it, it goes down, resume is exact, final/
loads back (also as the preference trainer's starting model), bad input gives clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from prefrec.errors import ConfigError, DataError
from prefrec.lm.samples import LMSample


def _samples(n: int, seed: int) -> list[LMSample]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randperm(40, generator=g)[:11].tolist()
        hist, cands = ids[:2 + i % 4], ids[5:]  # prompts of different lengths
        out.append(LMSample(prompt=f"User watched {', '.join(f'Movie {h}' for h in hist)}. Next? Answer:",
                            history=[f"Movie {h}" for h in hist],
                            candidates=[f"Movie {c}" + " Part II" * (j % 3) for j, c in enumerate(cands)],
                            target_index=i % 6, user=i))
    return out


@pytest.fixture(scope="module")
def tiny():
    from prefrec.models.lm import tiny_lm

    torch.set_num_threads(1)
    return tiny_lm(seed=0, initializer_range=0.3)


def _fresh(tiny):
    from prefrec.models.lm import tiny_lm

    return tiny_lm(tiny[1], seed=0, initializer_range=0.3)


def _cfg(tmp_path, name, **kw):
    from prefrec.train.sft import SFTConfig

    base = dict(output_dir=str(tmp_path / name), model="tiny", max_steps=4, per_device_train_batch_size=4,
                per_device_eval_batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, plots=False,
                lora_dropout=0.0, logging_steps=1)
    base.update(kw)
    return SFTConfig(**base)


def test_loss_is_cross_entropy_over_answer_tokens_only(tiny):
    from prefrec.lm.tokens import encode_answer, encode_prompt
    from prefrec.train.sft import collate_sft, encode_sft_samples, sft_loss

    model, tok = tiny
    model.eval()
    s = _samples(3, 0)
    ex = encode_sft_samples(tok, s, where="t")
    batch = collate_sft(ex, tok.pad_token_id)
    for b, (p, a) in enumerate(ex):
        assert (batch["labels"][b, :len(p)] == -100).all()
        assert batch["labels"][b, len(p):len(p) + len(a)].tolist() == a
        assert a[-1] == tok.eos_token_id
    # by hand: full logits of the unpadded concatenation, log-softmax, answer positions only
    nll, n = 0.0, 0
    for smp in s:
        p, a = encode_prompt(tok, smp.prompt), encode_answer(tok, smp.target)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0].float(), -1)
        for j, t in enumerate(a):
            nll -= logp[len(p) - 1 + j, t].item()
            n += 1
    with torch.no_grad():
        got = sft_loss(model, tok, s).item()
    assert got == pytest.approx(nll / n, rel=1e-5)
    # and NOT the loss over all tokens
    full = sum(len(encode_prompt(tok, x.prompt)) for x in s)
    assert n < full


def test_padding_does_not_change_the_loss(tiny):
    from prefrec.train.sft import answer_nll, collate_sft, encode_sft_samples

    model, tok = tiny
    model.eval()
    ex = encode_sft_samples(tok, _samples(4, 3), where="t")
    assert len({len(p) + len(a) for p, a in ex}) > 1  # real padding happens
    with torch.no_grad():
        alone = [answer_nll(model, collate_sft([e], tok.pad_token_id))[0].item() for e in ex]
        together, n, _ = answer_nll(model, collate_sft(ex, tok.pad_token_id))
        rev, _, _ = answer_nll(model, collate_sft(ex[::-1], tok.pad_token_id))
    assert together.item() == pytest.approx(sum(alone), rel=1e-5)
    assert rev.item() == pytest.approx(sum(alone), rel=1e-5)
    assert n == sum(len(a) for _, a in ex)


@pytest.fixture(scope="module")
def overfit_run(tiny, tmp_path_factory):
    """8 fixed examples, 12 steps of the full batch: the loss must fall."""
    from prefrec.train.sft import train_sft

    tmp = tmp_path_factory.mktemp("sft")
    model, tok = _fresh(tiny)
    cfg = _cfg(tmp, "overfit", max_steps=12, per_device_train_batch_size=8, eval_steps=6, plots=True)
    res = train_sft(cfg, model=model, tokenizer=tok, train_samples=_samples(8, 1), eval_samples=_samples(4, 2))
    return res, model, tok


def test_overfits_eight_examples_and_logs_metrics(overfit_run):
    res, _, _ = overfit_run
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    ev = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {"loss", "learning_rate", "grad_norm", "mean_token_accuracy"} <= set(train[0])
    assert [r["step"] for r in ev] == [6, 12]
    assert train[-1]["loss"] < 0.6 * train[0]["loss"]
    assert res.final_metrics["loss"] == pytest.approx(train[-1]["loss"])
    assert (res.run_dir / "plots" / "loss.png").exists()
    assert (res.run_dir / "config.yaml").exists()
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["truncated"] == {"train": 0, "eval": 0}


def test_final_round_trips_and_starts_preference_training(overfit_run):
    from prefrec.models.lm import load_trained_lm
    from prefrec.train.preference import PreferenceConfig, load_reference_model
    from prefrec.train.sft import sft_loss

    res, model, tok = overfit_run
    s = _samples(4, 2)
    model.eval()
    with torch.no_grad():
        want = sft_loss(model, tok, s).item()
        for path in (res.run_dir, res.run_dir / "final"):
            loaded, tok2 = load_trained_lm(path)
            assert sft_loss(loaded, tok2, s).item() == pytest.approx(want, rel=1e-5)
        ref, tok3 = load_reference_model(PreferenceConfig(model=str(res.run_dir)))
        assert not hasattr(ref, "peft_config")  # LoRA merged: a plain causal LM
        assert sft_loss(ref, tok3, s).item() == pytest.approx(want, rel=1e-4)


def test_resume_after_interruption_gives_the_same_weights(tiny, tmp_path, monkeypatch):
    import prefrec.checkpoint as ck
    from prefrec.train.sft import train_sft

    kw = dict(max_steps=4, save_steps=2, lora_dropout=0.1, gradient_accumulation_steps=2,
              per_device_train_batch_size=2, save_final_model=False, eval_limit=0)
    data = _samples(6, 5)

    def final_weights(run) -> dict:
        from prefrec.checkpoint import latest_checkpoint, load_checkpoint

        parts, state = load_checkpoint(latest_checkpoint(run / "checkpoints"))
        assert state["step"] == 4
        return parts["model"]

    model, tok = _fresh(tiny)
    full = train_sft(_cfg(tmp_path, "full", **kw), model=model, tokenizer=tok, train_samples=data)

    class Killed(Exception):
        pass

    real = ck.save_checkpoint

    def save_then_die(root, step, parts, state, keep=2):
        out = real(root, step, parts, state, keep=keep)
        if step == 2:
            raise Killed
        return out

    cfg = _cfg(tmp_path, "killed", **kw)
    monkeypatch.setattr(ck, "save_checkpoint", save_then_die)
    model, tok = _fresh(tiny)
    with pytest.raises(Killed):
        train_sft(cfg, model=model, tokenizer=tok, train_samples=data)
    monkeypatch.setattr(ck, "save_checkpoint", real)
    with pytest.raises(ConfigError, match="--resume"):  # a second start without --resume is refused
        train_sft(cfg, model=_fresh(tiny)[0], tokenizer=tok, train_samples=data)
    model, tok = _fresh(tiny)
    resumed = train_sft(cfg, resume=True, model=model, tokenizer=tok, train_samples=data)

    a, b = final_weights(full.run_dir), final_weights(resumed.run_dir)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    # a resume on other data is refused
    with pytest.raises(Exception, match="other examples"):
        train_sft(cfg, resume=True, model=_fresh(tiny)[0], tokenizer=tok, train_samples=_samples(6, 9))


def test_empty_answer_is_a_data_error(tiny):
    from prefrec.train.sft import encode_sft_samples

    _, tok = tiny
    bad = _samples(2, 0)
    bad[1].candidates[bad[1].target_index] = "   "
    with pytest.raises(DataError, match="sample 1: target title"):
        encode_sft_samples(tok, bad, where="x")
    with pytest.raises(DataError, match="no samples"):
        encode_sft_samples(tok, [], where="x")


def test_config_errors(tmp_path):
    from prefrec.cli import main
    from prefrec.config import load_config
    from prefrec.train.sft import SFTConfig, train_sft

    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(SFTConfig, None, ["learning_rat=1e-3"])
    with pytest.raises(ConfigError, match="lora_r"):
        load_config(SFTConfig, None, ["lora_r=0"])
    with pytest.raises(ConfigError, match="no-such-model"):
        train_sft(SFTConfig(output_dir=str(tmp_path / "x"), model=str(tmp_path / "no-such-model")),
                  train_samples=_samples(2, 0), eval_samples=[])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\nlearning_rat: 0.1\n")
    assert main(["-q", "sft", "--config", str(cfg)]) == 2


def test_cli_help_lists_examples(capsys):
    from prefrec.cli import main

    with pytest.raises(SystemExit) as e:
        main(["sft", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "configs/ml100k_sft.yaml" in out


def test_single_process_cpu_launch_is_reported(monkeypatch, caplog):
    """`accelerate launch --cpu --num_processes 2` starts one process: the trainer says so."""
    from types import SimpleNamespace

    from prefrec.train.sft import _check_launch

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with caplog.at_level("WARNING", logger="prefrec.train.sft"):
        _check_launch(SimpleNamespace(world=1))
    assert "--multi_gpu" in caplog.text
    caplog.clear()
    _check_launch(SimpleNamespace(world=2))
    assert not caplog.text
