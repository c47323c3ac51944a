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

STUDY = """\
name: resume
output_dir: {out}
seed: 11
data_dir: {data}
cf:
  base:
    data: {{dataset: ml-100k}}
    model: {{dim: 8}}
    train: {{epochs: 8, batch_size: 8, negatives: 4, eval_every: 3, ks: [5, 10], select_metric: NDCG@10,
             checkpoint_every: 1, threads: 1}}
  losses: [bpr]
"""


def _prefrec(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "prefrec.cli", "-q", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _final(run: Path) -> dict:
    """The final test metrics (the trainer's last metrics.jsonl record)."""
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    test = [r for r in rows if r.get("split") == "test"]
    assert len(test) == 1, rows
    return {k: v for k, v in test[0].items() if k != "seconds"}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    data = make_tiny_ml100k(tmp_path / "data", n_users=60, n_items=40, per_user=14)
    killed_f, ref_f = tmp_path / "killed.yaml", tmp_path / "ref.yaml"
    killed_f.write_text(STUDY.format(out=tmp_path / "killed", data=data))
    ref_f.write_text(STUDY.format(out=tmp_path / "ref", data=data))

    # 1. start, wait for the first complete checkpoint, SIGKILL.
    run = tmp_path / "killed" / "resume" / "bpr"
    p = _prefrec("run", str(killed_f))
    deadline = time.time() + 120
    while not list((run / "checkpoints").glob("step-*/state.json")):
        assert p.poll() is None, f"training ended before a checkpoint appeared: {p.communicate()}"
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not (run / "results.json").exists(), "the kill came too late to test anything"
    stage = json.loads((run / "stage.json").read_text())
    assert stage["status"] == "running"

    # 2. the same command again resumes the interrupted stage from its checkpoint.
    p = _prefrec("run", str(killed_f))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "resuming" in err

    # 3. an uninterrupted run with the same seed, in-process.
    from prefrec.experiment import load_experiment, run_experiment

    run_experiment(load_experiment(ref_f), echo=lambda s: None)
    ref = tmp_path / "ref" / "resume" / "bpr"
    assert _final(run) == _final(ref)
    a = json.loads((run / "results.json").read_text())["metrics"]
    b = json.loads((ref / "results.json").read_text())["metrics"]
    assert a == b
    # the history of the resumed run has no duplicated epochs
    epochs = [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()
              if json.loads(ln).get("split") == "train"]
    assert epochs == list(range(1, 9))
