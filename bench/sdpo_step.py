"""Benchmark: one S-DPO training step, naive (peer-style) vs prefrec (shared prefix + cached reference).

Not a test. Setting (the peer's, research/lm_side.md §1.3/§1.5): SmolLM2-135M fp32 via
``load_lm()``, LoRA r=8 / alpha=32 on all seven projections, gradient checkpointing on, batch 4,
LastFM prompts from ``lm_samples('llara-lastfm', 'train', ...)`` (10 history artists + 20
candidate artists, ~160 tokens; answers ~4 tokens + EOS), K = 3 and K = 19.

(a) naive: the policy runs over the 1+K concatenations (prompt + answer) with grad, and a
    frozen reference COPY (a second model in memory, as the peer trainer keeps) runs over the
    same concatenations, every step. (Like every scorer here it computes the vocab projection
    only at the answer positions, ``logits_to_keep``; the peer computes it at every position,
    so this baseline is faster and smaller than the peer's code; the peer's own figures are
    printed beside as constants.)
(b) prefrec: :func:`prefrec.train.preference.preference_step`: the policy scores the 1+K
    answers behind one copy of the prompt; reference log-probs come from the cache, which is
    built once, in its own subprocess, and read from disk (as in training; its one-off cost
    per example and its peak memory are printed too).

Each (variant, K) runs in its own subprocess so that peak RSS (``ru_maxrss`` of the child,
minus its RSS after loading the policy model) is honest; the naive child's delta includes its
reference copy. Both variants start from the same seeded,
non-zero LoRA weights (so policy != reference and the loss is not trivially log(1+K)) and the
same batch, and take the same AdamW steps: the loss of every step must agree within 1e-4.

    python bench/sdpo_step.py                    # K = 3 and 19, default steps
    python bench/sdpo_step.py --k 3 --steps 3 --naive-steps 2
    python bench/sdpo_step.py --denormal off --prefrec-only   # prefrec with flush_denormal off
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PREFREC_DATA", HERE.parent.parent / "shared" / "data"))
# The peer trainer's own figures, measured earlier on this machine (flush_denormal on).
PEER = {3: (42.0, 6.0), 19: (253.0, 16.4)}  # K -> (s/step, peak GiB)


def get_samples(n: int, seed: int):
    """n LastFM training samples via prefrec's loader (synthetic fallback without the data)."""
    if (DATA / "llara-lastfm").exists():
        from prefrec.lm.prompts import lm_samples

        return lm_samples("llara-lastfm", "train", data_dir=str(DATA), limit=n, seed=seed), "llara-lastfm train"
    return lastfm_like(n, seed), "synthetic LastFM-like (llara-lastfm not found)"

TEMPLATE = ("This user has listened to {history} in the previous. Please predict the next music "
            "artist this user will listen to. Choose the answer from the following 20 artist names: "
            "{cands}. Answer:")


def lastfm_like(n: int, seed: int = 0):
    """n LMSamples with the S-DPO music template over real LastFM artist names."""
    from prefrec.lm.samples import LMSample

    names_p = DATA / "llara-lastfm" / "id2name.txt"
    if names_p.exists():
        names = [ln.split("::", 1)[1].strip() for ln in names_p.read_text(encoding="utf-8").splitlines() if "::" in ln]
    else:  # synthetic fallback, same shape
        names = [f"Artist {i} Band" for i in range(4000)]
    names = [x for x in names if x]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pick = rng.sample(names, 30)
        hist, cands = pick[:10], pick[10:]
        t = rng.randrange(20)
        out.append(LMSample(prompt=TEMPLATE.format(history=", ".join(hist), cands=", ".join(cands)),
                            history=hist, candidates=cands, target_index=t))
    return out


def mem_available_gib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 ** 2
    return float("nan")


def start_memory_guard(floor_gib: float) -> None:
    """Kill this process (exit 3) before the machine runs out of memory: it is shared."""
    import threading

    def watch() -> None:
        while True:
            avail = mem_available_gib()
            if avail < floor_gib:
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
                print(f"memory guard: MemAvailable {avail:.1f} GiB < {floor_gib} GiB with this process at "
                      f"{rss_mib() / 1024:.1f} GiB RSS (peak {peak:.1f} GiB): aborting", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def setup(k: int, batch: int, seed: int, flush: bool):
    import torch

    from prefrec.models.lm import load_lm
    from prefrec.train.preference import sample_negatives

    torch.set_flush_denormal(False)
    torch.manual_seed(seed)
    model, tok = load_lm(lora={"r": 8, "alpha": 32, "dropout": 0.0}, flush_denormal=flush)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # same non-zero adapter in both variants: policy != reference
        for n, p in sorted(model.named_parameters()):
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 2e-3)
    model.train()
    samples, src = get_samples(batch, seed)
    cols = sample_negatives(samples, k, seed, 0, False)
    with torch.no_grad():  # page in every weight (safetensors are mmapped) before the baseline RSS is read
        _ = sum(float(p.sum()) for p in model.parameters())
    return model, tok, samples, src, cols


def child_refcache(batch: int, seed: int, flush: bool, out: str) -> dict:
    """Build the reference cache (all 20 candidates of the batch's samples) and save it."""
    import torch

    from prefrec.lm.ref_cache import compute_ref_logps

    model, tok, samples, _, _ = setup(1, batch, seed, flush)
    base_rss = rss_mib()
    t0 = time.perf_counter()
    cache = compute_ref_logps(model, tok, samples, batch_size=batch)
    dt = time.perf_counter() - t0
    torch.save(cache, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": "refcache", "ref_cache_s_per_example": dt / batch, "peak_rss_mib": peak,
            "peak_delta_mib": peak - base_rss, "rss_after_load_mib": base_rss}


def child(variant: str, k: int, steps: int, batch: int, seed: int, flush: bool, cache_file: str) -> dict:
    """One variant in this process; prints a JSON line with times, losses and memory."""
    import torch

    from prefrec.lm.scoring import naive_candidate_logps
    from prefrec.losses import sdpo
    from prefrec.models.lm import load_lm
    from prefrec.train.preference import RewardLoss, preference_step

    start_memory_guard(float(os.environ.get("SDPO_BENCH_MEM_FLOOR_GIB", "2.5")))
    model, tok, samples, src, cols = setup(k, batch, seed, flush)
    rows = list(range(batch))
    prompt_tokens = [len(tok(s.prompt)["input_ids"]) for s in samples]
    ans_tokens = [len(tok(" " + c, add_special_tokens=False)["input_ids"]) + 1 for s in samples for c in s.candidates]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    beta = 1.0
    base_rss = rss_mib()
    base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if variant == "prefrec":
        cache = torch.load(cache_file)  # built once by the refcache child, read from disk as in training
        ref = cache[torch.tensor(rows)[:, None], cols]
        objective = RewardLoss("sdpo")
    else:  # the peer keeps a frozen reference copy in memory and runs it every step
        ref_model, _ = load_lm(flush_denormal=flush)
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    times, cpu_times, losses = [], [], []

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    for _ in range(steps):
        t0, c0 = time.perf_counter(), cpu_s()
        if variant == "prefrec":
            loss, _ = preference_step(model, tok, samples, rows, cols, ref, objective, beta)
        else:
            prompts = [s.prompt for s in samples]
            cands = [[s.candidates[j] for j in c] for s, c in zip(samples, cols.tolist())]
            pol = naive_candidate_logps(model, tok, prompts, cands, grad=True)
            with torch.no_grad():
                rf = naive_candidate_logps(ref_model, tok, prompts, cands, grad=False)
            r = beta * (pol - rf)
            loss = sdpo(r[:, 0], r[:, 1:]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu_times.append(cpu_s() - c0)
        losses.append(loss.item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"variant": variant, "k": k, "batch": batch, "times": times, "losses": losses,
            "median_s": statistics.median(times), "cpu_times": cpu_times,
            "median_cpu_s": statistics.median(cpu_times), "load_avg_end": os.getloadavg()[0], "peak_rss_mib": peak,
            "peak_delta_mib": peak - max(base_rss, 0.0), "rss_after_load_mib": base_rss,
            "maxrss_before_steps_mib": base_max, "prompt_tokens_mean": sum(prompt_tokens) / len(prompt_tokens),
            "answer_tokens_mean": sum(ans_tokens) / len(ans_tokens), "threads": torch.get_num_threads(),
            "flush_denormal": flush, "samples": src}


def run_child(variant: str, k: int, steps: int, batch: int, seed: int, log_dir: Path, denormal: str,
              cache_file: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--k", str(k),
           "--steps", str(steps), "--batch", str(batch), "--seed", str(seed), "--denormal", denormal,
           "--cache-file", str(cache_file)]
    log_p = log_dir / f"sdpo_step_{variant}_k{k}_{denormal}.log"
    with log_p.open("w") as lf:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=lf, text=True)
    if proc.returncode == 3:
        raise SystemExit(f"{variant} K={k} aborted by the memory guard (machine low on memory); see {log_p}")
    if proc.returncode != 0:
        raise SystemExit(f"{variant} K={k} failed (exit {proc.returncode}); see {log_p}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="*", default=[3, 19])
    ap.add_argument("--steps", type=int, default=4, help="prefrec steps per K (median reported)")
    ap.add_argument("--naive-steps", type=int, default=2, help="naive steps per K (slow: ~1-4 min each)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--denormal", choices=["on", "off"], default="on",
                    help="torch.set_flush_denormal in every child (default on, as load_lm does)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads in every child (0 = torch's default); 1 gives cleaner CPU times on a busy machine")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=0,
                    help="set MALLOC_MMAP_THRESHOLD_ (bytes) in every child: a FIXED glibc mmap threshold, so "
                         "freed activation buffers go back to the OS and RSS tracks live tensors (0 = glibc default, "
                         "whose dynamic threshold keeps ~1 MB/token of freed buffers resident during training)")
    ap.add_argument("--prefrec-only", action="store_true", help="skip the naive variant")
    ap.add_argument("--min-free-gib", type=float, default=20.0,
                    help="refuse to start the naive K>=10 child with less MemAvailable than this; every child "
                         "also aborts itself if MemAvailable falls below $SDPO_BENCH_MEM_FLOOR_GIB (2.5)")
    ap.add_argument("--child", choices=["naive", "prefrec", "refcache"], help=argparse.SUPPRESS)
    ap.add_argument("--cache-file", help=argparse.SUPPRESS)
    a = ap.parse_args()
    flush = a.denormal == "on"
    if a.threads:
        os.environ["OMP_NUM_THREADS"] = str(a.threads)  # inherited by the children
    if a.malloc_mmap_threshold:
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(a.malloc_mmap_threshold)
    if a.child == "refcache":
        print(json.dumps(child_refcache(a.batch, a.seed, flush, a.cache_file)), flush=True)
        return
    if a.child:
        print(json.dumps(child(a.child, a.k[0], a.steps, a.batch, a.seed, flush, a.cache_file)), flush=True)
        return
    import tempfile

    import torch

    log_dir = Path(a.log_dir)
    cache_file = Path(tempfile.mkdtemp(prefix="sdpo_step_")) / "ref_cache.pt"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, flush_denormal {a.denormal}, threads "
          f"{a.threads or 'default'}, MALLOC_MMAP_THRESHOLD_ {a.malloc_mmap_threshold or 'glibc default'}, "
          f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rc = run_child("refcache", 0, 0, a.batch, a.seed, log_dir, a.denormal, cache_file)
    print(f"reference cache (once, all 20 candidates of {a.batch} examples, own subprocess): "
          f"{rc['ref_cache_s_per_example']:.2f} s/example, peak RSS +{rc['peak_delta_mib'] / 1024:.2f} GiB "
          f"(total {rc['peak_rss_mib'] / 1024:.2f} GiB)", flush=True)
    results = []
    for k in a.k:
        steps = min(a.steps, a.naive_steps)  # compare the same steps' losses
        fast = run_child("prefrec", k, a.steps if a.prefrec_only else max(a.steps, steps), a.batch, a.seed,
                         log_dir, a.denormal, cache_file)
        print(f"K={k:2d} prefrec: {fast['median_s']:.2f} s/step (median of {len(fast['times'])}: "
              f"{[round(t, 2) for t in fast['times']]}), "
              f"CPU {fast['median_cpu_s']:.1f} s/step, "
              f"peak RSS +{fast['peak_delta_mib'] / 1024:.2f} GiB (total {fast['peak_rss_mib'] / 1024:.2f} GiB), "
              f"losses {[round(x, 6) for x in fast['losses']]}", flush=True)
        if a.prefrec_only:
            results.append({"k": k, "prefrec": fast})
            continue
        if k >= 10:
            avail = mem_available_gib()
            if avail < a.min_free_gib:
                raise SystemExit(f"only {avail:.1f} GiB available (< {a.min_free_gib}); not starting the "
                                 f"naive K={k} step on a shared machine")
        naive = run_child("naive", k, a.naive_steps, a.batch, a.seed, log_dir, a.denormal, cache_file)
        print(f"K={k:2d} naive  : {naive['median_s']:.2f} s/step (median of {len(naive['times'])}: "
              f"{[round(t, 2) for t in naive['times']]}), "
              f"peak RSS +{naive['peak_delta_mib'] / 1024:.2f} GiB (total {naive['peak_rss_mib'] / 1024:.2f} GiB)",
              flush=True)
        if k in PEER:
            print(f"K={k:2d} peer   : {PEER[k][0]:.0f} s/step, {PEER[k][1]:.1f} GiB peak (constants, the peer's "
                  f"own code, measured earlier on this machine) -> peer/prefrec time "
                  f"{PEER[k][0] / fast['median_s']:.1f}x, memory {PEER[k][1] * 1024 / fast['peak_rss_mib']:.1f}x "
                  f"(total RSS)", flush=True)
        diff = max(abs(x - y) for x, y in zip(fast["losses"][:steps], naive["losses"][:steps]))
        tr = naive["median_s"] / fast["median_s"]
        tr_cpu = naive["median_cpu_s"] / fast["median_cpu_s"]
        mr = naive["peak_delta_mib"] / max(fast["peak_delta_mib"], 1e-9)
        print(f"K={k:2d} CPU-time per step: prefrec {fast['median_cpu_s']:.1f} s, naive {naive['median_cpu_s']:.1f} s "
              f"-> ratio {tr_cpu:.1f}x (less sensitive to other jobs on the machine)", flush=True)
        print(f"K={k:2d} time ratio naive/prefrec = {tr:.1f}x, peak-memory ratio (delta over loaded model) = "
              f"{mr:.1f}x, total-RSS ratio = {naive['peak_rss_mib'] / fast['peak_rss_mib']:.2f}x; "
              f"losses prefrec {[round(x, 6) for x in fast['losses'][:steps]]} vs naive "
              f"{[round(x, 6) for x in naive['losses'][:steps]]}: max |diff| {diff:.2e} "
              f"({'OK' if diff <= 1e-4 else 'MISMATCH'} at 1e-4)", flush=True)
        results.append({"k": k, "prefrec": fast, "naive": naive, "time_ratio": tr, "cpu_time_ratio": tr_cpu, "mem_ratio": mr,
                        "loss_max_abs_diff": diff})
    print(f"samples: {results[0]['prefrec']['samples']}; "
          f"prompt ~{results[0]['prefrec']['prompt_tokens_mean']:.0f} tokens, answers "
          f"~{results[0]['prefrec']['answer_tokens_mean']:.1f} tokens incl. EOS, batch {a.batch}, "
          f"torch threads {results[0]['prefrec']['threads']}, load average {os.getloadavg()[0]:.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
