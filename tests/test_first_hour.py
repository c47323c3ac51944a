"""A new user's first hour (issue 18): stage keys independent of how the data folder is written,
``prefrec.load(run, data_dir=...)`` and runs that remember their data, errors that speak Python,
up-front validation of ``compare --losses`` labels and ``run --only`` names, tagged log lines."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

import prefrec
from prefrec.cli import main
from prefrec.errors import ConfigError, DataError
from prefrec.experiment import load_experiment, plan, run_experiment

from test_experiment import make_tiny_ml100k, tiny_study

LM_PART = """\
lm:
  model: tiny
  dataset: ml-100k
  sft: {train_limit: 8, max_steps: 2, eval_limit: 0}
  preference:
    sdpo: {loss: sdpo, num_negatives: 3, train_limit: 8, max_steps: 2, eval_limit: 0}
  evaluate: {limit: 4}
"""


def _keys(f, data_dir, overrides=()):
    return {s.label: s.key for s in plan(load_experiment(f, list(overrides), data_dir=data_dir))}


def test_same_folder_written_three_ways_gives_one_key(tmp_path, monkeypatch):
    """Relative, absolute, through a symlink, or only via $PREFREC_DATA: the keys of every stage
    (CF and LM) are the same; another folder gives other keys."""
    f = tiny_study(tmp_path, extra=LM_PART)
    f.write_text(f.read_text().replace(f"data_dir: {tmp_path / 'data'}\n", ""))
    (tmp_path / "link").symlink_to(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    absolute = _keys(f, str(tmp_path / "data"))
    assert set(absolute) == {"bpr", "psl", "lm-base", "sft", "sdpo"}
    assert _keys(f, "data") == absolute
    assert _keys(f, "./link/../data/") == absolute
    assert _keys(f, str(tmp_path / "link")) == absolute
    monkeypatch.setenv("PREFREC_DATA", "data")
    assert _keys(f, None) == absolute
    make_tiny_ml100k(tmp_path / "other")
    other = _keys(f, str(tmp_path / "other"))
    assert all(other[k] != absolute[k] for k in absolute)


def test_lm_stage_configs_carry_the_resolved_folder(tmp_path, monkeypatch):
    f = tiny_study(tmp_path, extra=LM_PART)
    monkeypatch.chdir(tmp_path)
    stages = plan(load_experiment(f, data_dir="./data/"))
    real = os.path.realpath(tmp_path / "data")
    assert all(s.data_dir == real for s in stages)
    assert [s.config.data_dir for s in stages if s.kind in ("sft", "preference")] == [real, real]


def test_study_threads_is_one_policy(tmp_path):
    f = tiny_study(tmp_path, extra=LM_PART)
    stages = plan(load_experiment(f, ["threads=1"]))
    assert all(s.threads == 1 for s in stages)
    assert [s.config.train.threads for s in stages if s.kind == "cf"] == [1, 1]
    assert [s.config.threads for s in stages if s.kind in ("sft", "preference")] == [1, 1]
    with pytest.raises(ConfigError, match="set by the study"):
        load_experiment(f, ["threads=1", "lm.sft.threads=2"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("firsthour")
    f = tiny_study(tmp, losses=("psl",))
    res = run_experiment(load_experiment(f), echo=lambda s: None)
    return res.stages[0].run_dir, tmp / "data"


def test_load_takes_data_dir_at_top_level(trained, monkeypatch, tmp_path):
    run, data = trained
    monkeypatch.delenv("PREFREC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./data here
    a = prefrec.load(run, data_dir=data).recommend(["1", "2"], k=3)
    assert len(a) == 6 and a[0]["rank"] == 1


def test_run_remembers_its_resolved_data_folder(trained, monkeypatch, tmp_path):
    run, data = trained
    monkeypatch.delenv("PREFREC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    expected = prefrec.load(run, data_dir=data).recommend(["1"], k=3)
    assert json.loads((run / "results.json").read_text())["data_dir"] == os.path.realpath(data)
    assert prefrec.load(run).recommend(["1"], k=3) == expected
    # a train-cf run (no results.json) remembers it in the data row of metrics.jsonl
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    row = json.loads((copy / "metrics.jsonl").read_text().splitlines()[0])
    assert row["split"] == "data" and row["data_dir"] == os.path.realpath(data)
    assert prefrec.load(copy).recommend(["1"], k=3) == expected
    # the CLI too, without --data-dir or $PREFREC_DATA
    assert main(["-q", "recommend", "--run", str(copy), "--users", "1", "--k", "3", "--format", "json"]) == 0


def test_python_errors_name_arguments_not_options(trained, monkeypatch, tmp_path, capsys):
    run, data = trained
    monkeypatch.delenv("PREFREC_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "moved"
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    (copy / "metrics.jsonl").write_text("")  # nothing recorded: ./data is tried and missing
    with pytest.raises(DataError) as e:
        prefrec.load(copy)
    assert "data_dir=" in str(e.value) and "--data-dir" not in str(e.value)
    rec = prefrec.load(run, data_dir=data)
    with pytest.raises(ConfigError) as e:
        rec.recommend([], k=3)
    assert "--users" not in str(e.value) and 'users=["1", "2", "3"]' in str(e.value)
    with pytest.raises(ConfigError) as e:
        rec.recommend(["1"], k=0)
    assert "--k" not in str(e.value)
    # the CLI keeps speaking CLI
    assert main(["recommend", "--run", str(copy), "--users", "1"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def _cf_config(tmp_path):
    make_tiny_ml100k(tmp_path / "data")
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(f"""\
name: tiny
output_dir: {tmp_path / 'runs'}
data: {{dataset: ml-100k}}
model: {{dim: 8}}
train: {{epochs: 1, negatives: 8, batch_size: 64, eval_every: 1, ks: [5, 10, 20]}}
presets:
  psl-slow: {{loss.name: psl, loss.tau: 0.1}}
""")
    return cfg


@pytest.mark.parametrize("bad, needle", [("psl-foo", "activation"), ("bpx", "did you mean 'bpr'")])
def test_compare_validates_every_label_before_training(tmp_path, capsys, bad, needle):
    cfg = _cf_config(tmp_path)
    rc = main(["compare", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--losses", "bpr", bad])
    assert rc == 2
    err = capsys.readouterr().err
    assert repr(bad) in err and needle in err
    assert not (tmp_path / "runs").exists()  # bpr did not train


def test_compare_log_lines_name_their_run(tmp_path, caplog):
    cfg = _cf_config(tmp_path)
    with caplog.at_level(logging.INFO):
        assert main(["compare", "--config", str(cfg), "--data-dir", str(tmp_path / "data"),
                     "--losses", "bpr", "psl-slow"]) == 0
    tags = {m.split("]")[0] + "]" for m in caplog.messages if m.startswith("[")}
    assert {"[bpr]", "[psl-slow]"} <= tags


@pytest.mark.parametrize("dry", [True, False])
def test_run_only_unknown_stage_fails_before_anything(tmp_path, capsys, dry):
    f = tiny_study(tmp_path)
    args = ["run", str(f), "--only", "psl", "nosuchstage"] + (["--dry-run"] if dry else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "nosuchstage" in err and "stages: bpr, psl" in err
    assert not (tmp_path / "runs" / "tiny" / "psl").exists()


def test_dry_run_only_marks_unselected(tmp_path, capsys):
    f = tiny_study(tmp_path)
    assert main(["run", str(f), "--only", "psl", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "skipped (--only)" in next(line for line in out if " bpr " in line)
    assert "to run" in next(line for line in out if " psl " in line)


def test_progress_logs_eta_after_first_batch_and_by_count(caplog):
    from prefrec.logtag import log_tag
    from prefrec.progress import Progress

    with caplog.at_level(logging.INFO), log_tag("sft"):
        with Progress("rank", 10, bar=False) as p:  # time-based: the first batch logs, then every minute
            p(4)
            p(4)
            p(2)
        with Progress("generate", 10, every=5, bar=False) as p:
            for _ in range(5):
                p(2)
    lines = [m for m in caplog.messages if "cases" in m]
    assert lines[0].startswith("[sft] rank: 4/10 cases") and "ETA" in lines[0]
    assert len([m for m in lines if " rank:" in m]) == 1
    assert [m.split(":")[1].split()[0] for m in lines if "generate" in m] == ["6/10", "10/10"]


def test_progress_bar_counts(capsys):
    from prefrec.progress import Progress

    with Progress("rank", 3, bar=True) as p:
        p(1)
        p(2)
        assert p.done == 3 and p._bar.n == 3
    assert p._bar is None


def test_data_stats_time_range_as_dates():
    from prefrec.commands.data import format_time_range

    assert format_time_range([874724710.0, 893286638.0]) == \
        "1997-09-20 .. 1998-04-22 UTC (unix seconds 874724710 .. 893286638)"
    assert format_time_range([874724710000.0, 893286638000.0]).startswith("1997-09-20 .. 1998-04-22 UTC (unix ms")
    assert format_time_range([0.0, 19.0]) == "0 .. 19"  # positions in a sequence stay numbers
