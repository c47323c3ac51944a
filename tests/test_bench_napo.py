"""Smoke test of bench/napo_step.py --tiny: it runs, reports finite figures, and the negative
counts the NAPO step actually used match the sharing rule (batch 4, K 3, share_ratio 1.0 ->
3 neighbours, 3 + 3*3 = 12 negatives per example)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "napo_step.py"




def test_effective_negative_rule(load_script):
    bench = load_script(BENCH, "napo_step_bench")
    assert bench.effective_negatives(3, 4, 1.0) == (3, 12)
    assert bench.effective_negatives(3, 4, 0.7) == (2, 9)    # int(0.7 * 3) = 2, rounded down
    assert bench.effective_negatives(5, 2, 1.0) == (1, 10)
    assert bench.effective_negatives(3, 1, 1.0) == (0, 3)    # a batch of one cannot share


@pytest.mark.slow
def test_tiny_benchmark_reports_finite_figures_and_counts(tmp_path, capsys, load_script):
    bench = load_script(BENCH, "napo_step_bench")
    out = tmp_path / "napo.json"
    bench.main(["--tiny", "--in-process", "--steps", "2", "--json", str(out)])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["k_neighbours"] == 3 and data["k_eff"] == 12
    res = {r["variant"]: r for r in data["results"]}
    assert set(res) == {"share", "share_grad", "own", "eff"}
    want = {"share": (3, 3, 12), "share_grad": (3, 3, 12), "own": (3, 0, 3), "eff": (12, 0, 12)}
    for v, (k_own, nbrs, eff) in want.items():
        r = res[v]
        assert (r["k_own"], r["shared_k"], r["effective_negatives"]) == (k_own, nbrs, eff), v
        assert len(r["times"]) == 2 and all(math.isfinite(t) and t > 0 for t in r["times"]), v
        assert math.isfinite(r["median_cpu_s"]) and r["median_cpu_s"] > 0, v
        assert math.isfinite(r["peak_delta_mib"]) and r["peak_delta_mib"] >= 0, v
        assert all(math.isfinite(x) for x in r["losses"]), v
    assert res["share"]["detach_shared"] and not res["share_grad"]["detach_shared"]
    # same start, but (c)'s gradient also flows through the shared negatives: step 2 differs
    assert res["share"]["losses"][0] == pytest.approx(res["share_grad"]["losses"][0], abs=1e-6)
    assert abs(res["share"]["losses"][1] - res["share_grad"]["losses"][1]) > 1e-6
    rows = [ln for ln in text.splitlines() if ln.startswith("(")]
    table = {ln.split("  ")[0].strip(): ln.split() for ln in rows if "s/step" not in ln}
    assert float(table["(a) share"][4]) == 12.0 and float(table["(b) no-share Keff"][5]) == 12.0
    assert "WARNING" not in text
