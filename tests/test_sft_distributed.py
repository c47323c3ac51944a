"""``accelerate launch --multi_gpu --num_processes 2 -m prefrec.cli sft`` (CPU) on the tiny Llama: the run
finishes, both ranks end with identical weights, and those equal a 1-process run with the same
global batch (the loss is normalized by the GLOBAL answer-token count, gradients are summed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

N_TRAIN = 10  # not a multiple of the global batch (4): the epoch order wraps around


def _records(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randperm(40, generator=g)[:10].tolist()
        cands = [f"Movie {c}" + " Part II" * (j % 2) for j, c in enumerate(ids[4:])]
        out.append({"historyList": [f"Movie {h}" for h in ids[:1 + i % 4]], "itemList": cands,
                    "trueSelection": cands[i % len(cands)]})
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _final_adapter(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    from prefrec.config import load_config
    from prefrec.train.sft import SFTConfig, train_sft

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.json").write_text(json.dumps(_records(N_TRAIN, 1)))
    (data / "val.json").write_text(json.dumps(_records(4, 2)))
    cfg_file = tmp_path / "sft.yaml"
    cfg_file.write_text(f"model: tiny\ndataset: {data}\nseed: 3\ntrain_limit: null\neval_limit: 4\n"
                        "max_steps: 3\nlearning_rate: 0.01\nwarmup_ratio: 0.0\nlora_dropout: 0.0\n"
                        "per_device_eval_batch_size: 2\nplots: false\n")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    two = tmp_path / "two"
    # --multi_gpu selects accelerate's torchrun launcher (works without GPUs: the trainer asks for
    # cpu=True and gets gloo); `--cpu --num_processes 2` would start ONE process (accelerate 1.16)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "prefrec.cli", "-q", "sft", "--config", str(cfg_file),
           f"output_dir={two}", "per_device_train_batch_size=2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # meanwhile, the same global batch (4) in this process
    torch.set_num_threads(1)
    one = train_sft(load_config(SFTConfig, cfg_file, [f"output_dir={tmp_path / 'one'}",
                                                       "per_device_train_batch_size=4"]))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    assert "trained 3 steps" in out

    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    a, b = summary["rank_weight_checksums"]
    assert a == b  # identical weights on both ranks
    w1, w2 = _final_adapter(tmp_path / "one"), _final_adapter(two)
    assert w1.keys() == w2.keys() and w1
    moved = 0.0
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6)
        moved = max(moved, w1[k].abs().max().item())
    assert moved > 0  # training did change the adapter (B starts at zero)

    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "eval_loss"):
        v1 = [r[key] for r in rows1 if key in r]
        v2 = [r[key] for r in rows2 if key in r]
        assert len(v1) == len(v2) > 0
        assert v2 == pytest.approx(v1, rel=1e-4)
