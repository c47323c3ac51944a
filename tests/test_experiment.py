"""``prefrec run``: a study file runs end to end, finished stages are skipped by config hash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prefrec.cli import main
from prefrec.errors import ConfigError
from prefrec.experiment import load_experiment, plan, run_experiment


def make_tiny_ml100k(root: Path, n_users: int = 24, n_items: int = 30, per_user: int = 10, seed: int = 0) -> Path:
    """A MovieLens-100K-shaped folder (u.data + u.item) small enough to train in a second."""
    rng = np.random.default_rng(seed)
    folder = root / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    t = 880000000
    for u in range(1, n_users + 1):
        # users prefer a block of items so there is signal to learn
        pool = (np.arange(per_user * 2) + 3 * u) % n_items + 1
        for i in rng.choice(pool, per_user, replace=False):
            t += 1
            lines.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{t}")
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    flags = "|".join(["0"] * 18 + ["1"])
    items = [f"{i}|Movie {i} ({1990 + i % 10})|01-Jan-1995||http://x|{flags}" for i in range(1, n_items + 1)]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    return root


def tiny_study(tmp_path: Path, losses=("bpr", "psl"), extra: str = "") -> Path:
    make_tiny_ml100k(tmp_path / "data")
    f = tmp_path / "study.yaml"
    f.write_text(f"""\
name: tiny
output_dir: {tmp_path / 'runs'}
seed: 3
data_dir: {tmp_path / 'data'}
cf:
  base:
    data: {{dataset: ml-100k}}
    model: {{dim: 8}}
    train: {{epochs: 2, negatives: 8, batch_size: 64, eval_every: 1, ks: [5, 10, 20]}}
  losses: [{', '.join(losses)}]
  presets:
    psl: {{loss.name: psl, loss.tau: 0.1}}
report:
  columns: [Recall@10, NDCG@10]
{extra}""")
    return f


def test_study_runs_then_skips_then_reruns_only_changed(tmp_path, capsys):
    f = tiny_study(tmp_path)
    assert main(["-q", "run", str(f)]) == 0
    out = capsys.readouterr().out
    report = tmp_path / "runs" / "tiny" / "report.md"
    assert report.exists() and f"report: {report}" in out
    assert "| bpr |" in out and "| psl |" in out
    res = json.loads((tmp_path / "runs" / "tiny" / "psl" / "results.json").read_text())
    assert res["seed"] == 3 and "NDCG@10" in res["metrics"]
    text = report.read_text()
    assert "plots/loss.png" in text and "## Study config" in text

    # Same file again: nothing trains.
    exp = load_experiment(f)
    again = run_experiment(exp, echo=lambda s: None)
    assert again.ran == [] and sorted(again.skipped) == ["bpr", "psl"]

    # Change one run's temperature: only that stage re-runs; the old output is kept aside.
    exp2 = load_experiment(f, ['cf.presets={"psl": {"loss.name": "psl", "loss.tau": 0.2}}'])
    third = run_experiment(exp2, echo=lambda s: None)
    assert third.ran == ["psl"] and third.skipped == ["bpr"]
    assert list((tmp_path / "runs" / "tiny").glob("psl@*"))


def test_stage_keys_depend_on_config_only(tmp_path):
    f = tiny_study(tmp_path)
    a = {s.label: s.key for s in plan(load_experiment(f))}
    b = {s.label: s.key for s in plan(load_experiment(f, ["report.columns=[NDCG@5]"]))}
    c = {s.label: s.key for s in plan(load_experiment(f, ["seed=4"]))}
    assert a == b  # the report does not change what trains
    assert all(a[k] != c[k] for k in a)


def test_dry_run_lists_stages(tmp_path, capsys):
    f = tiny_study(tmp_path)
    assert main(["run", str(f), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "bpr" in out and "psl" in out and "to run" in out
    assert not (tmp_path / "runs" / "tiny" / "bpr").exists()


@pytest.mark.parametrize("extra, needle", [
    ("colums: [x]\n", "did you mean 'report.columns'"),
])
def test_unknown_top_level_key(tmp_path, capsys, extra, needle):
    f = tiny_study(tmp_path)
    f.write_text(f.read_text().replace("report:\n  columns", "report:\n  colums"))
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_unknown_key_inside_cf_base_names_study_path(tmp_path):
    f = tiny_study(tmp_path)
    f.write_text(f.read_text().replace("train: {epochs", "trian: {epochs"))
    with pytest.raises(ConfigError) as e:
        load_experiment(f)
    assert "'cf.base.trian'" in str(e.value) and "'cf.base.train'" in str(e.value)


def test_unknown_loss_label(tmp_path):
    f = tiny_study(tmp_path, losses=("bpr", "pls"))
    with pytest.raises(ConfigError, match="did you mean 'psl'"):
        load_experiment(f)


def test_demo_config_loads_and_lists_stages(tmp_path, capsys):
    """configs/demo.yaml is valid and `prefrec demo --dry-run` plans its CF grid without training."""
    make_tiny_ml100k(tmp_path / "data")
    assert main(["demo", "--dry-run", "--data-dir", str(tmp_path / "data"), f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    for label in ("bpr", "sl", "psl"):
        assert f"cf           {label}" in out


def test_demo_without_data_fails_fast(tmp_path, capsys):
    assert main(["demo", "--data-dir", str(tmp_path)]) == 2
    assert "ml-100k" in capsys.readouterr().err
