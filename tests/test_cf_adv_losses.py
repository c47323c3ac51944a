"""AdvInfoNCE and LLPAUC in the CF trainer: learning in both negative modes, the adversarial
schedule, LLPAUC's clipped scalars, exact resume, selection by `compare` / `run`, clear errors."""

import json

import numpy as np
import pytest
import torch

from prefrec.checkpoint import latest_checkpoint, load_checkpoint
from prefrec.cli import main
from prefrec.errors import ConfigError
from prefrec.losses import make_loss, make_minmax_loss
from prefrec.train.cf import CF_LOSSES, build_model, build_splits, evaluate, train_cf

from test_cf_train import cfg, clustered
from test_experiment import tiny_study

# The tiny data has 16 negatives per row: LLPAUC's paper optimum beta=0.01 (a top-1% FPR bound)
# leaves less than one negative per row, so the tests use the peer's other grid point.
LOSSES = {
    # epochs 4 and 8 are adversary-only epochs
    "advinfonce": ["loss.name=advinfonce", "loss.epoch_adv=4", "train.epochs=8"],
    "llpauc": ["loss.name=llpauc", "loss.alpha=0.3", "loss.beta=0.1", "train.lr=0.01", "train.epochs=6"],
}


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["per_row", "shared"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_learns_in_both_negative_modes(tmp_path, loss, mode):
    assert loss in CF_LOSSES
    splits = build_splits(*clustered(), seed=0)
    c = cfg(tmp_path, *LOSSES[loss], f"train.negative_mode={mode}")
    torch.manual_seed(c.seed)  # the trainer's first draw: the same untrained model
    untrained = evaluate(build_model(c, splits), splits, splits.valid, c)["NDCG@10"]
    r = train_cf(c, splits=splits)
    recs = _records(tmp_path / "t")
    losses = [x["loss"] for x in recs if x["split"] == "train"]
    assert len(losses) == c.train.epochs and np.isfinite(losses).all()
    assert r["best_valid"] > untrained + 0.05, (untrained, r["best_valid"])
    # random ranking gives Recall@10 ~ 10/71 = 0.14
    assert r["test"]["Recall@10"] > 0.25, r["test"]
    report = (tmp_path / "t" / "report.md").read_text()
    assert f"loss `{loss}`" in report


def test_advinfonce_alternates_model_and_adversary_epochs(tmp_path):
    splits = build_splits(*clustered(seed=5), seed=0)
    train_cf(cfg(tmp_path, "loss.name=advinfonce", "loss.epoch_adv=2", "train.epochs=3",
                 "train.keep_checkpoints=5"), splits=splits)
    ck = sorted((tmp_path / "t" / "checkpoints").glob("step-*"))
    assert len(ck) == 3
    parts = [load_checkpoint(p)[0] for p in ck]

    def same(a, b, key):
        return all(torch.equal(a[key][k], b[key][k]) for k in a[key])

    model = [p["model"] for p in parts]
    adv = [p["minmax"]["adversary"] for p in parts]
    # epoch 2 ((e+1) % 2 == 0): only the adversary moves; epoch 3: only the model
    assert same({"m": model[0]}, {"m": model[1]}, "m") and not same({"a": adv[0]}, {"a": adv[1]}, "a")
    assert not same({"m": model[1]}, {"m": model[2]}, "m") and same({"a": adv[1]}, {"a": adv[2]}, "a")
    assert parts[2]["minmax"]["optimizer"]["param_groups"][0]["maximize"] is True


def test_llpauc_scalars_move_and_stay_clipped(tmp_path):
    splits = build_splits(*clustered(seed=6), seed=0)
    train_cf(cfg(tmp_path, *LOSSES["llpauc"], "train.epochs=3"), splits=splits)
    p = {k: float(v) for k, v in load_checkpoint(latest_checkpoint(tmp_path / "t" / "checkpoints"))[0]
         ["minmax"]["params"].items()}
    assert 0 <= p["a"] <= 1 and 0 <= p["b"] <= 1 and -1 <= p["s_pos"] <= 4 and 0 <= p["s_neg"] <= 5
    assert max(-p["a"], p["b"] - 1) <= p["gamma"] <= 1
    assert p["s_neg"] != 0.5 and p["theta_a"] != 0.5, p


@pytest.mark.parametrize("over", [
    ["loss.name=advinfonce", "loss.epoch_adv=2"],  # the resumed half starts with a model epoch, then the adversary
    ["loss.name=llpauc", "loss.alpha=0.3", "loss.beta=0.1", "train.negative_mode=shared"],
])
def test_resume_gives_identical_results(tmp_path, over):
    splits = build_splits(*clustered(seed=1), seed=0)
    full = train_cf(cfg(tmp_path / "a", "train.epochs=4", *over), splits=splits)
    train_cf(cfg(tmp_path / "b", "train.epochs=2", *over), splits=splits)
    resumed = train_cf(cfg(tmp_path / "b", "train.epochs=4", *over), splits=splits, resume=True)
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    strip = lambda recs: [{k: v for k, v in x.items() if k != "seconds"} for x in recs]  # noqa: E731
    assert strip(_records(tmp_path / "a" / "t")) == strip(_records(tmp_path / "b" / "t"))


@pytest.mark.parametrize("over,msg", [
    (["loss.name=advinfonse"], "did you mean 'advinfonce'"),
    (["loss.name=advinfonce", "loss.epoch_adv=1"], "epoch_adv=1 must be an integer >= 2"),
    (["loss.name=advinfonce", "loss.lr_adv=0"], "lr_adv=0.0 must be a finite number > 0"),
    (["loss.name=advinfonce", "loss.tau=0"], "must be > 0"),
    (["loss.name=llpauc", "loss.alpha=1.5"], r"alpha=1.5 must be in \(0, 1\]"),
    (["loss.name=llpauc", "loss.neg_weight=8"], "'llpauc' has no hyperparameter 'neg_weight'"),
    (["loss.name=psl", "loss.beta=0.1"], "'psl' has no hyperparameter 'beta'"),
])
def test_bad_hyperparameters_are_clear(tmp_path, over, msg):
    splits = build_splits(*clustered(), seed=0)
    with pytest.raises(ConfigError, match=msg):
        train_cf(cfg(tmp_path, *over), splits=splits)
    assert not (tmp_path / "t" / "checkpoints").exists()  # failed before training


def test_loss_functions_by_name():
    with pytest.raises(ConfigError, match="did you mean 'tau'"):
        make_minmax_loss("advinfonce", tua=0.1)
    with pytest.raises(ConfigError, match="only `prefrec train-cf`"):
        make_loss("llpauc", alpha=0.5)  # the preference trainer's make_loss cannot train it
    with pytest.raises(ConfigError, match="did you mean 'kappa'"):
        make_loss("llpauc", kapa=5)  # validated before refusing
    fn = make_minmax_loss("advinfonce", tau=0.2, neg_weight=1.0)
    pos, neg = torch.randn(3), torch.randn(3, 5)
    torch.testing.assert_close(fn(pos, neg), make_loss("sl_paper", tau=0.2)(pos, neg))


def test_compare_and_study_select_them(tmp_path, capsys, monkeypatch):
    f = tiny_study(tmp_path, losses=("advinfonce", "llpauc"))
    monkeypatch.setenv("PREFREC_DATA", str(tmp_path / "data"))  # the CLI sets it; restored after the test
    assert main(["-q", "run", str(f), "cf.presets.llpauc={loss.name: llpauc, loss.beta: 0.1}"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").rglob("best.safetensors"))
    assert len(runs) == 2
    data = str(tmp_path / "data")
    rc = main(["compare", "--config", "configs/ml100k_raw_mf_noise.yaml", "--data-dir", data,
               "--losses", "advinfonce", "llpauc", f"output_dir={tmp_path / 'cmp'}", "data.noise_p=0",
               "train.epochs=1", "train.negatives=8", "train.threads=1", "model.dim=8",
               "train.ks=[5,10]", "train.select_metric=NDCG@10"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| advinfonce |" in out and "| llpauc |" in out
