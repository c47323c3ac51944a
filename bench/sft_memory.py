"""Benchmark: where the peak memory of an SFT step on SmolLM2-135M goes (issue 18, point 7).

Not a test. The setting of ``configs/ml100k_sft.yaml`` (fp32 SmolLM2-135M-Instruct from the
safetensors cache, LoRA r = 8 on all seven projections, ml-100k training prompts of ~300 tokens,
max_length 512), one optimizer step per child process so every peak is the child's own.

Each phase's peak is the Linux high-water mark (``VmHWM``), reset before the phase by writing 5
to ``/proc/self/clear_refs``; "delta" is the peak minus the RSS when the phase started. Phases:

1. ``import``: python + torch + transformers + prefrec;
2. ``data``: the prompted training samples;
3. ``load``: the model (``load_reference_model``, what ``prefrec sft`` calls);
4. ``setup``: LoRA wrapping + AdamW (``setup_training``);
5. ``step``: forward + backward + optimizer step of one batch (``answer_nll``, the SFT loss).

Variants (one child each): batch 8 (the config's) and batch 4, each with and without gradient
checkpointing, so the activation part of the step peak can be read off as the difference.

    OMP_NUM_THREADS=1 python bench/sft_memory.py                 # all variants
    python bench/sft_memory.py --variants b8 b8-ckpt              # some
    python bench/sft_memory.py --variants b8 b8-ckpt --mallopt    # with prefrec.memory.tune_malloc()
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {"b8": (8, False), "b8-ckpt": (8, True), "b4": (4, False), "b4-ckpt": (4, True)}


def _status(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


class Phases:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._start = _status("VmRSS")
        self._t = time.perf_counter()
        self._cpu = time.process_time()
        _reset_peak()

    def mark(self, name: str) -> None:
        peak = _status("VmHWM")
        rss = _status("VmRSS")
        self.rows.append({"phase": name, "start_mib": round(self._start), "peak_mib": round(peak),
                          "delta_mib": round(peak - self._start), "end_mib": round(rss),
                          "wall_s": round(time.perf_counter() - self._t, 1),
                          "cpu_s": round(time.process_time() - self._cpu, 1)})
        self._start, self._t, self._cpu = rss, time.perf_counter(), time.process_time()
        _reset_peak()


def child(batch: int, ckpt: bool, data_dir: str, profile: bool = False, mallopt: bool = False) -> dict:
    if mallopt:
        from prefrec.memory import tune_malloc

        assert tune_malloc()
    ph = Phases()
    import torch

    from prefrec.lm.prompts import lm_samples
    from prefrec.train.preference import setup_training
    from prefrec.train.sft import (SFTConfig, _fit, answer_nll, collate_sft, encode_sft_samples,
                                   load_start_model)

    torch.set_num_threads(1)
    ph.mark("import")
    cfg = SFTConfig(model="smollm2-135m", dataset="ml-100k", data_dir=data_dir, seed=0, max_length=512,
                    train_limit=64, per_device_train_batch_size=batch, max_steps=1, use_peft=True,
                    lora_r=8, lora_alpha=32, gradient_checkpointing=ckpt, output_dir="/tmp/unused")
    samples = lm_samples("ml-100k", "train", data_dir=data_dir, limit=64, seed=0)
    ph.mark("data")
    model, tok = load_start_model(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    attn = getattr(model.config, "_attn_implementation", "?")
    ph.mark("load")
    samples, _ = _fit(samples, tok, cfg, "bench")
    ex = encode_sft_samples(tok, samples, where="bench")
    model, params, sched, optimizer, scheduler = setup_training(model, cfg, len(ex), 1)
    model.train()
    ph.mark("setup")
    batch_t = collate_sft(ex[:batch], tok.pad_token_id)
    prof = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        prof = torch_profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True)
        prof.__enter__()
    nll, n, _ = answer_nll(model, batch_t)
    (nll / n).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    top = []
    if prof is not None:
        prof.__exit__(None, None, None)
        ev = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_memory_usage)
        top = [{"op": e.key, "shapes": str(e.input_shapes)[:160], "calls": e.count,
                "self_alloc_mib": round(e.self_cpu_memory_usage / 2**20)} for e in ev[:15]]
    ph.mark("step")
    ids = batch_t["input_ids"]
    return {"batch": batch, "gradient_checkpointing": ckpt, "tokens": list(ids.shape), "answer_tokens": n,
            "params": n_params, "trainable": sum(p.numel() for p in params.values()), "attn": attn,
            "phases": ph.rows, "top_allocating_ops": top, "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data-dir", default=os.environ.get("PREFREC_DATA", "data"))
    ap.add_argument("--profile", action="store_true",
                    help="also list the ops that keep the most memory allocated (torch profiler; slower)")
    ap.add_argument("--mallopt", action="store_true",
                    help="call prefrec.memory.tune_malloc() first (fixed glibc mmap threshold; same effect "
                         "as MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=65536 in the environment)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        b, ck = VARIANTS[a.child]
        print(json.dumps(child(b, ck, a.data_dir, a.profile, a.mallopt)))
        return
    results = {}
    for v in a.variants:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", v, "--data-dir", a.data_dir]
                             + (["--profile"] if a.profile else []) + (["--mallopt"] if a.mallopt else []),
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"variant {v} failed")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results[v] = res
        print(f"\n== {v}: batch {res['batch']}, gradient checkpointing {res['gradient_checkpointing']}, "
              f"input {res['tokens'][0]} x {res['tokens'][1]} tokens ({res['answer_tokens']} answer tokens), "
              f"{res['params'] / 1e6:.1f} M params ({res['trainable'] / 1e6:.2f} M trainable), attention "
              f"{res['attn']}, child wall {time.perf_counter() - t0:.0f} s, ru_maxrss {res['ru_maxrss_mib']} MiB")
        print(f"{'phase':8s} {'start':>8s} {'peak':>8s} {'delta':>8s} {'end':>8s} {'wall s':>7s} {'cpu s':>7s}")
        for r in res["phases"]:
            print(f"{r['phase']:8s} {r['start_mib']:8d} {r['peak_mib']:8d} {r['delta_mib']:8d} {r['end_mib']:8d} "
                  f"{r['wall_s']:7.1f} {r['cpu_s']:7.1f}")
        for t in res["top_allocating_ops"]:
            print(f"  {t['self_alloc_mib']:7d} MiB net  {t['calls']:4d} calls  {t['op']}  {t['shapes']}")
    step = {v: next(p for p in r["phases"] if p["phase"] == "step")["delta_mib"] for v, r in results.items()}
    if "b8" in step and "b8-ckpt" in step:
        print(f"\nstep peak above its start, batch 8: {step['b8']} MiB without gradient checkpointing, "
              f"{step['b8-ckpt']} MiB with it (ratio {step['b8-ckpt'] / step['b8']:.2f})")
    print(json.dumps({v: r["phases"] for v, r in results.items()}))


if __name__ == "__main__":
    main()
