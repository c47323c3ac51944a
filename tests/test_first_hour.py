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
    assert set(absolute) == {"bpr", "psl", "random", "popularity", "lm-base", "sft", "sdpo"}
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
    sft = next(s for s in plan(load_experiment(f, ["lm.sft.threads=2"])) if s.label == "sft")
    assert sft.config.threads == 2  # no study policy: a stage may set its own


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


def test_intervals_against_reference_values():
    import numpy as np

    from prefrec.metrics.intervals import bootstrap_mean, interval, rank_case_values, wilson

    lo, hi = wilson(2, 40)  # p = 0.05, n = 40: Wilson 95 % = [0.0138, 0.1650] (hand-computed)
    assert abs(lo - 0.01383) < 1e-4 and abs(hi - 0.16501) < 1e-4
    assert wilson(0, 10)[0] == 0.0 and abs(wilson(10, 10)[1] - 1.0) < 1e-12
    v = rank_case_values([1, 2, 6, 3])
    assert v["HR@1"].tolist() == [1, 0, 0, 0] and v["HR@5"].tolist() == [1, 1, 0, 1]
    assert np.allclose(v["NDCG@5"], [1, 1 / np.log2(3), 0, 0.5])
    assert interval([1, 0, 0, 0]) == wilson(1, 4)
    a, b = bootstrap_mean([0.2, 0.4, 0.6, 0.8])
    assert 0.2 <= a < 0.5 < b <= 0.8 and bootstrap_mean([0.2, 0.4, 0.6, 0.8]) == (a, b)  # seeded


def _fake(root, name, final, ci=None, history=(), plots=False):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (d / "results.json").write_text(json.dumps({"metrics": final, "ci": ci or {}, "wall_time_s": 1.0}))
    if plots:
        from prefrec.report import _bar_plot, load_run

        _bar_plot([load_run(d)], list(final), d / "plots" / "loss.png")
    return d


def test_report_has_a_figure_per_table_intervals_and_linked_run_plots(tmp_path):
    from PIL import Image

    from prefrec.experiment import LM_COLUMNS
    from prefrec.report import write_report

    cf_hist = [{"epoch": e, "split": "train", "loss": 1.0 / e} for e in range(1, 4)]
    runs = [_fake(tmp_path, "bpr", {"NDCG@20": 0.3, "Recall@20": 0.4}, history=cf_hist),
            _fake(tmp_path, "psl", {"NDCG@20": 0.35, "Recall@20": 0.42}, history=cf_hist),
            _fake(tmp_path, "popularity", {"n_cases": 40, "HR@1": 0.425, "ValidRatio": 1.0, "rank HR@1": 0.425,
                                           "rank HR@5": 0.8, "rank NDCG@5": 0.62},
                  ci={"HR@1": [0.285, 0.578], "rank HR@1": [0.285, 0.578]}),
            _fake(tmp_path, "sft", {"n_cases": 40, "HR@1": 0.05, "ValidRatio": 0.9, "rank HR@1": 0.1,
                                    "rank HR@5": 0.3, "rank NDCG@5": 0.2},
                  ci={"HR@1": [0.014, 0.165]}, plots=True,
                  history=[{"step": s, "loss": 2.0 / s} for s in range(1, 4)])]
    tables = {"Embedding recommenders (full ranking)": ["Recall@20", "NDCG@20"],
              "LM recommenders (same test cases, 20 candidates each)": LM_COLUMNS}
    text = write_report(runs, tmp_path / "rep", columns=tables).read_text()
    images = [line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert "plots/metrics_embedding_recommenders.png" in images and "plots/metrics_lm_recommenders.png" in images
    for link in images:
        with Image.open(tmp_path / "rep" / link) as im:
            im.verify()
    # CF (per epoch) and LM (per step) curves are drawn apart
    assert "plots/loss_per_epoch.png" in images and "plots/loss_per_step.png" in images
    assert "| run | cases | HR@1 |" in text
    assert "| popularity | 40 | **0.4250 [0.285, 0.578]** |" in text
    assert "| sft | 40 | 0.0500 [0.014, 0.165] |" in text
    assert "- sft: [loss.png](../sft/plots/loss.png)" in text
    # a table's runs only: the CF figure has no LM row and vice versa
    lm_table = text.split("### LM recommenders")[1].split("![")[0]
    assert "| bpr |" not in lm_table


def test_study_baseline_rows_on_the_same_cases(tmp_path, data_dir):
    from prefrec.commands.baseline import lm_eval_cases, load_cases
    from prefrec.lm.prompts import lm_samples

    f = tmp_path / "s.yaml"
    f.write_text(f"""\
name: bl
output_dir: {tmp_path / 'runs'}
seed: 5
data_dir: {data_dir}
lm:
  dataset: ml-100k
  evaluate: {{limit: 12, base: false}}
""")
    exp = load_experiment(f)
    res = run_experiment(exp, echo=lambda s: None)
    assert res.ran == ["random", "popularity"]
    rand = json.loads((tmp_path / "runs/bl/random/results.json").read_text())
    pop = json.loads((tmp_path / "runs/bl/popularity/results.json").read_text())
    assert rand["metrics"]["n_cases"] == pop["metrics"]["n_cases"] == 12
    assert rand["metrics"]["rank HR@1"] == pytest.approx(1 / 20) and rand["metrics"]["rank HR@5"] == pytest.approx(0.25)
    # popularity, recomputed by hand on the evaluate-lm cases of the same seed and limit
    samples = lm_samples("ml-100k", "test", data_dir=data_dir, limit=12, seed=5)
    splits, n_items = load_cases("ml-100k", 5, str(data_dir))
    cases = lm_eval_cases(splits["test"], "ml-100k", "test", 12, 5, str(data_dir))
    assert len(cases) == len(samples) == 12
    lo, hi = pop["ci"]["rank HR@1"]
    assert lo <= pop["metrics"]["rank HR@1"] <= hi
    table = (tmp_path / "runs/bl/report.md").read_text()
    assert "| random | 12 |" in table and "| popularity | 12 |" in table
    with pytest.raises(ConfigError, match="did you mean 'sasrec'"):
        load_experiment(f, ["lm.evaluate.baselines=[sasrek]"])


def test_tune_malloc_is_safe_to_call_twice():
    """In a child process, so the test session's own allocator is left alone."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from prefrec.memory import tune_malloc; "
                          "print(tune_malloc(), tune_malloc())"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.split()
    assert first == second  # idempotent; glibc Linux accepts it, elsewhere a no-op
    if not sys.platform.startswith("linux"):
        assert first == "False"
