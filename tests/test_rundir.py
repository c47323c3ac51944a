"""A run folder belongs to one run (:mod:`prefrec.rundir`): two processes at once, reuse of a folder,
a resume under a changed config, a corrupt newest checkpoint, names escaping output_dir, finishing
twice, temp files of interrupted writes, refused runs leaving folders. Through the real CLI where
the finding was made through it; no timing assumptions (the second process is refused by a lock
this test holds, not by racing a training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_experiment import make_tiny_ml100k

from prefrec import rundir
from prefrec.cli import main
from prefrec.errors import ConfigError, DataError

CONFIG = """\
name: r
output_dir: {out}
seed: 3
data: {{dataset: ml-100k}}
model: {{dim: 8}}
loss: {{name: bpr}}
train: {{epochs: 3, batch_size: 16, negatives: 4, eval_every: 1, ks: [5], select_metric: NDCG@5,
        checkpoint_every: 1, keep_checkpoints: 3, threads: 1}}
"""


@pytest.fixture
def cf(tmp_path):
    """``run(*extra) -> (rc, stderr)`` of ``prefrec train-cf`` on a tiny dataset; the run folder."""
    data = make_tiny_ml100k(tmp_path / "data", n_users=20, n_items=15, per_user=8)
    cfg = tmp_path / "cf.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "runs"))

    def run(*extra: str) -> int:
        return main(["-q", "train-cf", "--config", str(cfg), "--data-dir", str(data), *extra])

    run.folder = tmp_path / "runs" / "r"
    return run


def _test_rows(run: Path) -> list[dict]:
    return [r for r in rundir.read_jsonl(run / "metrics.jsonl") if r.get("split") == "test"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- reuse / overwrite
def test_fresh_run_refuses_a_folder_holding_another_run(cf, capsys):
    assert cf() == 0
    before = (cf.folder / "metrics.jsonl").read_text()
    assert cf("train.epochs=0") == 2
    err = _err(capsys)
    assert "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert (cf.folder / "metrics.jsonl").read_text() == before  # the old run is untouched
    # a typo does not touch the previous run either (refused before anything is written)
    assert cf("loss.name=bprr") == 2
    assert (cf.folder / "metrics.jsonl").read_text() == before


def test_overwrite_moves_the_old_run_aside(cf, capsys):
    assert cf() == 0
    old = _test_rows(cf.folder)
    assert cf("--overwrite", "train.epochs=1") == 0
    aside = [p for p in cf.folder.parent.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and _test_rows(aside[0]) == old
    assert not (aside[0] / rundir.LOCK).exists()
    assert [r["epoch"] for r in rundir.read_jsonl(cf.folder / "metrics.jsonl") if r["split"] == "train"] == [1]
    assert cf("--overwrite", "--resume") == 2
    assert "contradict" in _err(capsys)


# ----------------------------------------------------------------------------- resume rules
def test_resume_refuses_a_changed_config_with_the_key_diff(cf, capsys):
    assert cf("train.epochs=2") == 0
    assert cf("--resume", "train.lr=0.5", "model.dim=16") == 2
    err = _err(capsys)
    assert "model.dim: 8 -> 16" in err and "train.lr: " in err and "config.yaml" in err
    stored = (cf.folder / "config.yaml").read_text()
    assert "dim: 8" in stored  # not rewritten
    # more epochs is documented as safe: continues the run
    assert cf("--resume", "train.epochs=3") == 0
    epochs = [r["epoch"] for r in rundir.read_jsonl(cf.folder / "metrics.jsonl") if r["split"] == "train"]
    assert epochs == [1, 2, 3]
    # fewer epochs than the checkpoint: refused, naming the key
    assert cf("--resume", "train.epochs=1") == 2
    assert "train.epochs" in _err(capsys)


def test_resume_falls_back_to_the_newest_intact_checkpoint(cf, capsys, caplog):
    assert cf() == 0
    ref = _test_rows(cf.folder)
    cks = sorted((cf.folder / "checkpoints").glob("step-*"))
    assert len(cks) == 3
    (cks[-1] / "weights.safetensors").write_bytes(b"\x80\x04garbage pickle")
    (cks[-2] / "state.json").write_text('{"step": 2, "epo')  # truncated
    assert cf("--resume") == 0  # resumes from step 1 and trains epochs 2..3 again
    assert _test_rows(cf.folder) == ref  # the same computation
    # every checkpoint corrupt: a clear error, not a traceback
    for ck in (cf.folder / "checkpoints").glob("step-*"):
        (ck / "weights.safetensors").write_bytes(b"not safetensors")
    assert cf("--resume") == 2
    assert "none of the 3 checkpoint(s) can be loaded" in _err(capsys)


def test_finishing_twice_is_idempotent_and_a_torn_metrics_line_is_dropped(cf):
    assert cf() == 0
    ref = _test_rows(cf.folder)
    with (cf.folder / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "spl')  # a kill mid-write
    assert cf("--resume") == 0
    assert _test_rows(cf.folder) == ref


def test_a_shape_mismatch_with_the_checkpoint_is_an_error(cf, capsys):
    assert cf() == 0
    (cf.folder / "config.yaml").unlink()  # no stored config to compare: the checkpoint load must catch it
    assert cf("--resume", "model.dim=16") == 2
    assert "checkpoint" in _err(capsys)


# ----------------------------------------------------------------------------- folders and names
def test_refused_run_leaves_no_folder_and_temp_files_are_cleaned(cf, tmp_path, capsys):
    assert cf("data.dataset=nope-such-dataset") == 2
    assert not cf.folder.exists()
    assert cf() == 0
    (cf.folder / "checkpoints" / ".tmp-step-abc").mkdir()
    (cf.folder / ".config.yaml.x1.tmp").write_text("half")
    (cf.folder / ".tmp-final-x").mkdir()
    assert cf("--resume") == 0
    assert not (cf.folder / "checkpoints" / ".tmp-step-abc").exists()
    assert not (cf.folder / ".config.yaml.x1.tmp").exists() and not (cf.folder / ".tmp-final-x").exists()
    assert not (cf.folder / rundir.LOCK).exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "..", ".", "a/b", ".hidden", ""])
def test_names_cannot_leave_output_dir(cf, tmp_path, capsys, name):
    assert cf(f"name={name}") == 2
    assert "name" in _err(capsys)
    assert not (tmp_path / "x").exists()


def test_output_dir_pointing_at_a_file(cf, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert cf(f"output_dir={f}") == 2
    assert "is a file" in _err(capsys)


def test_study_and_stage_names_cannot_escape(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    for text, needle in (("name: '..'\ncf: {losses: [bpr]}\n", "name"),
                         ("name: ok\ncf: {losses: ['../x'], presets: {'../x': {loss.name: bpr}}}\n", "cf.losses"),
                         ("name: ok\nlm: {sft: {}, preference: {'../p': {loss: sdpo}}}\n", "lm.preference")):
        study.write_text(f"output_dir: {tmp_path / 'runs'}\n" + text)
        assert main(["run", str(study), "--dry-run"]) == 2
        err = _err(capsys)
        assert needle in err, err


# ----------------------------------------------------------------------------- the lock
LOCKER = """
import sys
from prefrec.rundir import claim
from prefrec.errors import PrefrecError
try:
    with claim(sys.argv[1]):
        print("got it")
except PrefrecError as e:
    print("refused:", e)
"""


def _other_process(folder: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", LOCKER, str(folder)], capture_output=True, text=True, check=False,
                          env=env, timeout=120).stdout


def test_a_second_process_is_refused_while_the_folder_is_held(tmp_path):
    run = tmp_path / "run"
    with rundir.claim(run):
        out = _other_process(run)
        assert out.startswith("refused:") and f"pid {os.getpid()}" in out and "another process" in out
    assert _other_process(run).startswith("got it")  # released at the end of the run


def test_two_trainings_into_one_folder(cf, capsys):
    """The CLI refuses while another process holds the folder (held here by a claim in a child)."""
    cf.folder.mkdir(parents=True)
    code = "import sys\nfrom prefrec.rundir import claim\nwith claim(sys.argv[1]):\n print('held', flush=True)\n sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(cf.folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cf() == 2
        err = _err(capsys)
        assert "another process is using this run folder" in err and f"pid {holder.pid}" in err
        assert not (cf.folder / "metrics.jsonl").exists()
    finally:
        holder.communicate("", timeout=60)
    assert cf() == 0


def test_a_stale_lock_file_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "then"}))
    with rundir.claim(run):
        assert json.loads((run / rundir.LOCK).read_text())["pid"] == os.getpid()
    assert not (run / rundir.LOCK).exists()


def test_claim_is_reentrant_in_one_process(tmp_path):
    with rundir.claim(tmp_path / "r"):
        with rundir.claim(tmp_path / "r"):
            pass
        assert (tmp_path / "r" / rundir.LOCK).exists()


# ----------------------------------------------------------------------------- pure functions
def test_config_diff_lists_keys_and_allows_safe_ones():
    old = {"name": "a", "train": {"epochs": 3, "lr": 0.1}, "model": {"dim": 8}}
    new = {"name": "b", "train": {"epochs": 5, "lr": 0.2}, "model": {"dim": 8}}
    refused, allowed = rundir.config_diff(old, new, "cf")
    assert refused == ["train.lr: 0.1 -> 0.2"] and allowed == ["train.epochs: 3 -> 5"]
    refused, allowed = rundir.config_diff({"num_train_epochs": 1, "learning_rate": 1e-4},
                                          {"num_train_epochs": 2, "learning_rate": 1e-3}, "lm")
    assert refused == ["learning_rate: 0.0001 -> 0.001"] and allowed == ["num_train_epochs: 1 -> 2"]


def test_read_jsonl_rules(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(DataError, match="line 2"):
        rundir.read_jsonl(p)
    p.write_text('{"a": 1}\n{"a": 2')
    assert rundir.read_jsonl(p) == [{"a": 1}]


def test_check_name():
    assert rundir.check_name("psl-relu_0.5", "k") == "psl-relu_0.5"
    for bad in ("..", "a/b", "/x", ".x", "a\\b", "a\x00"):
        with pytest.raises(ConfigError):
            rundir.check_name(bad, "k")


def test_sft_finished_twice_keeps_its_summary_and_refuses_a_changed_resume(tmp_path):
    import torch
    from test_sft import _samples

    from prefrec.models.lm import tiny_lm
    from prefrec.train.sft import SFTConfig, train_sft

    torch.set_num_threads(1)
    model, tok = tiny_lm(seed=0, initializer_range=0.3)
    cfg = SFTConfig(output_dir=str(tmp_path / "sft"), model="tiny", max_steps=2, per_device_train_batch_size=4,
                    eval_limit=0, plots=False, save_final_model=False, warmup_ratio=0.0)
    data = _samples(6, 5)
    first = train_sft(cfg, model=model, tokenizer=tok, train_samples=data)
    summary = (tmp_path / "sft" / "summary.json").read_text()
    again = train_sft(cfg, resume=True, model=tiny_lm(tok, seed=0)[0], tokenizer=tok, train_samples=data)
    assert again.steps == 2 and again.final_metrics == first.final_metrics and again.final_metrics["loss"] > 0
    assert (tmp_path / "sft" / "summary.json").read_text() == summary
    with pytest.raises(ConfigError, match="learning_rate"):
        train_sft(cfg.model_copy(update={"learning_rate": 0.5}), resume=True, model=tiny_lm(tok, seed=0)[0],
                  tokenizer=tok, train_samples=data)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_sft(cfg, model=tiny_lm(tok, seed=0)[0], tokenizer=tok, train_samples=data)
    # killed after the last checkpoint, before the summary: the checkpoint's metrics are kept
    (tmp_path / "sft" / "summary.json").unlink()
    again = train_sft(cfg, resume=True, model=tiny_lm(tok, seed=0)[0], tokenizer=tok, train_samples=data)
    assert again.final_metrics == first.final_metrics
    # more steps: documented as safe (the schedule is re-planned); fewer than the checkpoint: refused
    longer = train_sft(cfg.model_copy(update={"max_steps": 3}), resume=True, model=tiny_lm(tok, seed=0)[0],
                       tokenizer=tok, train_samples=data)
    assert longer.steps == 3 and longer.final_metrics["loss"] > 0
    with pytest.raises(ConfigError, match="step 3"):
        train_sft(cfg, resume=True, model=tiny_lm(tok, seed=0)[0], tokenizer=tok, train_samples=data)


def test_a_planted_lock_symlink_is_refused_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / rundir.LOCK)
    with pytest.raises(ConfigError, match="lock file"), rundir.claim(run):
        pass
    assert victim.read_text() == "keep"


def test_study_force_keeps_the_old_stage_and_a_second_study_process_is_refused(tmp_path, capsys):
    from test_experiment import tiny_study

    f = tiny_study(tmp_path, losses=("bpr",))
    assert main(["-q", "run", str(f)]) == 0
    stage = tmp_path / "runs" / "tiny" / "bpr"
    old = _test_rows(stage)
    assert main(["-q", "run", str(f), "--force"]) == 0
    aside = [p for p in stage.parent.iterdir() if p.name.startswith("bpr.old-")]
    assert len(aside) == 1 and _test_rows(aside[0]) == old and _test_rows(stage) == old  # same seed, same result
    capsys.readouterr()
    with rundir.claim(tmp_path / "runs" / "tiny"):  # held here; the CLI below runs in a child process
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        r = subprocess.run([sys.executable, "-m", "prefrec.cli", "-q", "run", str(f), "--force"], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and "another process is using this run folder" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
