"""train-cf and compare end to end on real (tiny) data: IR-Benchmark movielens-100k and raw ml-100k."""

import json

import pytest

from prefrec.cli import main

FAST = ["train.epochs=2", "train.eval_every=1", "train.negatives=20", "train.max_batches_per_epoch=3",
        "train.threads=1", "model.dim=8"]


def test_train_cf_cli(tmp_path, data_dir, capsys):
    rc = main(["train-cf", "--config", "configs/ml100k_mf_psl.yaml", "--data-dir", str(data_dir),
               f"output_dir={tmp_path}", "name=cli", *FAST])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| cli |" in out and "NDCG@20" in out
    run = tmp_path / "cli"
    for f in ("config.yaml", "metrics.jsonl", "best.safetensors", "report.md"):
        assert (run / f).exists(), f
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["split"] == "data" and recs[0]["n_users"] == 939 and recs[0]["n_items"] == 1016
    # resume after the run finished: nothing left to train, same test metrics
    rc = main(["train-cf", "--config", "configs/ml100k_mf_psl.yaml", "--data-dir", str(data_dir), "--resume",
               f"output_dir={tmp_path}", "name=cli", *FAST])
    assert rc == 0


def test_compare_cli_raw_ml100k_with_noise(tmp_path, data_dir, capsys):
    rc = main(["compare", "--config", "configs/ml100k_raw_mf_noise.yaml", "--data-dir", str(data_dir),
               "--losses", "sl", "psl-relu", f"output_dir={tmp_path}", *FAST])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| sl |" in out and "| psl-relu |" in out
    assert (tmp_path / "ml100k_raw_mf_noise-compare.md").exists()
    rec = json.loads((tmp_path / "ml100k_raw_mf_noise-sl" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["false_negatives"] > 0


@pytest.mark.parametrize("bad,msg", [
    (["loss.name=psll"], "did you mean 'psl'"),
    (["loss.tau=-1"], "must be > 0"),
    (["train.negativs=3"], "unknown config key"),
])
def test_cli_errors_are_clear(tmp_path, data_dir, capsys, bad, msg):
    rc = main(["train-cf", "--config", "configs/ml100k_mf_psl.yaml", "--data-dir", str(data_dir),
               f"output_dir={tmp_path}", *FAST, *bad])
    assert rc == 2
    assert msg in capsys.readouterr().err
