"""Kill -9 a CF training stage after its first checkpoint, resume it, get the same final metrics.

A real subprocess is killed with SIGKILL (no cleanup handlers run), so this checks what the
atomic checkpoints promise: whatever is on disk at that moment is enough to continue, and the
continued run is the same computation as an uninterrupted one with the same seed (model,
optimizer, shuffling and negative-sampler RNG states all restored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_experiment import make_tiny_ml100k

CONFIG = """\
name: killed
output_dir: {out}
seed: 11
data: {{dataset: ml-100k}}
model: {{dim: 8}}
loss: {{name: bpr}}
train: {{epochs: 8, batch_size: 8, negatives: 4, eval_every: 3, ks: [5, 10], select_metric: NDCG@10,
        checkpoint_every: 1, threads: 1}}
"""


def _prefrec(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "prefrec.cli", "-q", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final(run: Path) -> dict:
    """The final test metrics (the trainer's last metrics.jsonl record)."""
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    test = [r for r in rows if r.get("split") == "test"]
    assert len(test) == 1, rows
    return {k: v for k, v in test[0].items() if k != "seconds"}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data = make_tiny_ml100k(tmp_path / "data", n_users=60, n_items=40, per_user=14)
    cfg_file = tmp_path / "cf.yaml"
    cfg_file.write_text(CONFIG.format(out=tmp_path / "runs"))
    argv = ["train-cf", "--config", str(cfg_file), "--data-dir", str(data)]

    # 1. start, wait for the first complete checkpoint, SIGKILL.
    run = tmp_path / "runs" / "killed"
    p = _prefrec(*argv)
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*/state.json")):
        assert p.poll() is None, f"training ended before a checkpoint appeared: {p.communicate()}"
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    assert not any(r.get("split") == "test" for r in rows), "the kill came too late to test anything"

    # 2. --resume continues from the checkpoint.
    p = _prefrec(*argv, "--resume")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err

    # 3. an uninterrupted run with the same seed, in-process.
    from prefrec.cf.config import CFConfig
    from prefrec.config import load_config
    from prefrec.train.cf import train_cf

    ref_cfg = load_config(CFConfig, cfg_file, ["name=ref"])
    ref_result = train_cf(ref_cfg, data_dir=data)
    assert _final(run) == _final(tmp_path / "runs" / "ref")
    assert {k: v for k, v in _final(run).items() if k not in ("epoch", "split")} == ref_result["test"]
    # the history of the resumed run has every epoch once
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(ln).get("split") == "train"]
    assert epochs == list(range(1, 9))


def test_prefrec_run_resumes_an_interrupted_stage(tmp_path, monkeypatch):
    """A stage whose stage.json says "running" (the study was killed) is resumed, not restarted;
    a finished one is skipped; --force restarts."""
    from prefrec import experiment as ex
    from test_experiment import tiny_study

    f = tiny_study(tmp_path, losses=("bpr",))
    exp = ex.load_experiment(f)
    stage = ex.plan(exp)[0]
    calls = []

    def fake(stage, resume):
        calls.append(resume)
        stage.run_dir.mkdir(parents=True, exist_ok=True)
        (stage.run_dir / "results.json").write_text('{"metrics": {"NDCG@10": 0.5}}')
        return {"NDCG@10": 0.5}

    monkeypatch.setattr(ex, "_run_cf", fake)
    ex._write_stage_file(stage, "running")
    ex.run_experiment(exp, echo=lambda s: None)
    ex.run_experiment(exp, echo=lambda s: None)
    ex.run_experiment(exp, force=True, echo=lambda s: None)
    assert calls == [True, False]  # resumed; then skipped (no call); then forced fresh
