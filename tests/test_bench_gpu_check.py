"""bench/gpu_check.py at a tiny shape on the CPU: it runs end to end, the shared-prefix and naive
S-DPO scorers give the same loss, bf16 mixed precision stays within 2 % of fp32, and every figure
the GPU run reports is present and finite."""

from __future__ import annotations

import json
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_tiny_gpu_check_on_cpu(tmp_path, load_script):
    bench = load_script(BENCH, "gpu_check_bench")
    out = tmp_path / "gpu.json"
    bench.main(["--device", "cpu", "--shapes", "tiny", "--steps", "1", "--k", "3", "--batch", "2",
                "--prompt-len", "24", "--answer-len", "3", "--json", str(out)])
    res = json.loads(out.read_text())["results"][0]
    assert res["parity"]["sdpo_rel_diff"] < 0.02 and res["parity"]["sft_rel_diff"] < 0.02
    for prec in ("fp32", "bf16"):
        d = res[f"sdpo_k3_{prec}"]
        assert d["loss_shared_vs_naive"] < 1e-2 if prec == "bf16" else d["loss_shared_vs_naive"] < 1e-4
        for r in (res[f"sft_{prec}"], d["shared"], d["naive"]):
            assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("step_s", "tokens_per_s", "tflops")), r
        assert d["naive"]["tokens"] > d["shared"]["tokens"]  # the naive step re-reads every prompt 1+K times
