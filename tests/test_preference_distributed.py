"""``accelerate launch --multi_gpu --num_processes 2 -m prefrec.cli sdpo`` on a tiny random Llama (CPU).

Launcher note: with accelerate 1.16, ``accelerate launch --cpu --num_processes 2`` starts ONE
process (the simple launcher; multi-CPU needs an mpirun hostfile), silently. ``--multi_gpu``
on a machine without GPUs goes through torchrun and the trainer's ``Accelerator(cpu=True)``
then uses gloo: that is the 2-process CPU run tested here (``torchrun --nproc_per_node 2 -m
prefrec.cli ...`` is equivalent).

What must hold: the run finishes; the reference cache is computed ONCE (one file per split,
sharded over the ranks, written by rank 0) and equals the 1-process cache; and the final LoRA
weights equal a 1-process run with the same GLOBAL batch (2 x 2 = 1 x 4) within 1e-5.

Why exact equality is possible here: every rank builds the same model and LoRA init from the
seed, the global micro-batch order and the negatives are pure functions of (seed, epoch), each
rank takes its slice, and the trainable gradients are averaged with one all-reduce, which is
the gradient of the mean loss over the global batch (equal slices). The only differences are
float rounding from padding/batching, far below 1e-5. Dropout would break it (each rank draws
its own masks), so the test sets ``lora_dropout: 0``. A 1-process run with HALF the batch is
not needed for power: ``epoch`` in metrics.jsonl proves the global batch was 4 (a silent
1-process fallback with batch 2 logs epoch 0.25 at step 1, and its weights differ by ~1e-3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from prefrec.cli import main
from test_preference_cli import write_sdpo_json


def _config(tmp_path: Path, name: str, per_device: int, cache: str = "refcache") -> Path:
    data = tmp_path / "records.json"
    if not data.exists():
        write_sdpo_json(data, 8)
    cfg = dict(model="tiny", dataset=str(data), output_dir=str(tmp_path / name), seed=3, max_steps=2,
               train_limit=8, eval_limit=4, per_device_train_batch_size=per_device, per_device_eval_batch_size=2,
               num_negatives=3, learning_rate=1e-3, warmup_ratio=0.0, lora_dropout=0.0, max_grad_norm=1.0,
               save_final_model=True, plots=False, ref_cache_dir=str(tmp_path / cache))
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _caches(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("ref-*.safetensors")}


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    launcher = shutil.which("accelerate")
    if launcher is None:
        pytest.skip("accelerate CLI not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "prefrec.cli", "sdpo", "--config", str(_config(tmp_path, "two", 2))]
    # the 1-process run goes on meanwhile (own cache folder): on a shared machine the wall time is
    # the longer of the two, not their sum
    # (output to files: a full pipe would block the launcher while this process trains)
    with (tmp_path / "launch.out").open("w") as fo, (tmp_path / "launch.err").open("w") as fe:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=fo, stderr=fe, text=True)
        try:
            torch.set_num_threads(1)
            assert main(["sdpo", "--config", str(_config(tmp_path, "one", 4, cache="refcache_one"))]) == 0
            proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
    out, err = (tmp_path / "launch.out").read_text(), (tmp_path / "launch.err").read_text()
    assert proc.returncode == 0, err[-3000:]
    two, one = tmp_path / "two", tmp_path / "one"
    assert (two / "final").is_dir() and out.count("run directory:") == 1  # only the main process reports
    rows = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["epoch"] == 0.5  # 8 samples / global batch 2 x 2 processes

    # the reference cache: computed once by the 2 ranks together (one file per split, not one per
    # rank), keyed like the 1-process cache and equal to it (each rank scored its rows, summed)
    c2, c1 = _caches(tmp_path / "refcache"), _caches(tmp_path / "refcache_one")
    assert len(c2) == 2 and sorted(c2) == sorted(c1), (c2, c1)
    for name in c2:
        torch.testing.assert_close(load_file(str(tmp_path / "refcache" / name))["logps"],
                                   load_file(str(tmp_path / "refcache_one" / name))["logps"],
                                   atol=1e-4, rtol=1e-5, equal_nan=True)
    s_two, s_one = (json.loads((r / "summary.json").read_text()) for r in (two, one))
    assert s_two["ref_cache"] == s_one["ref_cache"]

    # same global batch => same training curve and the same final weights
    assert s_two["train"]["loss"] == pytest.approx(s_one["train"]["loss"], abs=1e-5)
    w2, w1 = _adapter(two), _adapter(one)
    assert w2.keys() == w1.keys() and w2
    for k in w2:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-5, rtol=0)
    moved = max((w2[k] - 0).abs().max().item() for k in w2 if "lora_B" in k)
    assert moved > 1e-4  # training did change the (zero-initialised) B matrices

    # a second launch into the finished folder without --resume: EVERY rank refuses (before the
    # engine decided on all ranks, rank 1 went on and waited forever for rank 0)
    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert again.returncode != 0
    assert again.stderr.count("already holds a run") == 2, again.stderr[-3000:]
