"""Benchmark: does NAPO's in-batch negative sharing give more negatives without more memory?

Not a test. The NAPO paper claims that sharing in-batch negatives enlarges every example's
negative set "for free". This script measures the time per optimizer step and the peak memory
of the REAL preference-trainer step with and without sharing.

How sharing is computed (``prefrec.lm.napo``, read from the code, not assumed): the policy
scores each example's target + K own negatives behind one copy of its prompt
(``preference_step`` -> ``candidate_logps``); ``NapoObjective`` then calls
``napo_batch_loss`` -> ``share_negatives``, which appends to every example the K own-negative
REWARDS of its ``k = min(int(share_ratio * (N - 1)), N - 1)`` most similar other examples of the
batch (N = batch size on one process; similarity = dot product of SASRec user states). A shared
negative is the value the OTHER example already computed, i.e. scored under the other user's
prompt, never re-scored; with ``detach_shared`` (default, the authors' choice) it carries no
gradient. Effective negatives per example = K + k * K (the step's ``napo/negatives`` metric
reports the count actually used; the script checks it against the formula).
Batch 4, K = 3, share_ratio 1.0: k = 3, effective = 3 + 3 * 3 = 12 (share_ratio 0.7, the config
default, gives k = 2 -> 9).

Variants (same model, same batch prompts, same LoRA, same optimizer; each in its own subprocess):

(a) ``share``       NAPO, share_negatives on, K own negatives, detached shared negatives;
(c) ``share_grad``  as (a) with ``detach_shared: false`` (gradients through shared negatives);
(d) ``own``         NAPO without sharing at the same K own negatives (the cost floor of (a));
(b) ``eff``         NAPO without sharing (``--baseline sdpo``: reference-free S-DPO) at
                    K = the effective count of (a) (must be <= 19 = the non-target candidates).

Ratios are printed against (b): "same number of negatives, scored under the example's own
prompt" vs "the same count obtained by sharing".

Setting (as ``prefrec napo`` trains, reusing its functions, not re-implementations):
``PreferenceConfig`` with ``loss: napo``, ``reference_free: true`` (the authors' NAPO: rewards =
beta * log pi, no reference cache), napo gamma0 1.0 / alpha 0.3 / momentum 0.9 (adaptive margin
on), beta 1; model from ``load_reference_model`` (default ``smollm2-135m`` = ``load_lm()``, fp32,
offline from the local cache; ``--tiny``: ``tiny_lm`` as ``model: tiny``); LoRA r=8, alpha=32,
dropout 0.05 on all seven projections, gradient checkpointing on (non-reentrant) and AdamW +
scheduler via ``setup_training`` (the trainer's ``attach_trainable``); batch 4 from
``load_samples`` = ``lm_samples('llara-lastfm', 'train', data_dir=../shared/data, limit=4,
seed=0)``; negatives from ``sample_negatives``. One measured step = the trainer's loop body for
one micro-batch: ``preference_step`` (policy scoring + objective) -> backward ->
``clip_grad_norm_`` (0.3) -> ``optimizer.step`` -> ``scheduler.step`` -> ``zero_grad``.

User states / confidence scores: NAPO needs a SASRec. ``--sasrec DIR`` (a ``prefrec baseline
--model sasrec`` run on llara-lastfm, e.g. runs/lmres/baseline-lastfm-sasrec-n100) builds the
objective exactly as the trainer does (``build_objective`` -> ``napo_objective``, split check
included). Without it a STAND-IN is used: a randomly initialised SASRec (hidden 64, 2 blocks,
max_len 10, seed 0) passed to ``NapoObjective``, whose states and scores are attached through the
same ``attach_sequential_signals``. Random states change WHICH neighbours are chosen, never how
many, and speed/memory do not depend on the values. Signals are attached before timing.

Measured per variant: wall seconds per step (median of ``--steps``), process CPU seconds per step
(median; less sensitive to other jobs), and the peak RSS over the steps minus the RSS after
setup (model loaded, weights paged in, signals attached). The peak is ``ru_maxrss`` after the
kernel's peak counter was reset (``/proc/self/clear_refs`` = 5) at the end of setup, so a loading
transient cannot hide the step's peak; if the reset is refused, the plain ``ru_maxrss`` delta is
used and flagged. Also printed: distinct negative ITEMS per example (shared lists can overlap
with the own ones) and how many shared negatives are the example's own target (a shared negative
is only "negative" for the user it was drawn for).

    python bench/napo_step.py --tiny                      # tiny random Llama, synthetic samples, seconds
    OMP_NUM_THREADS=1 python bench/napo_step.py --threads 1 --steps 4 \\
        --sasrec runs/lmres/baseline-lastfm-sasrec-n100   # SmolLM2-135M, LastFM, real SASRec
    python bench/napo_step.py --k 3 --share-ratio 0.7     # the config default ratio (k = 2, 9 negatives)
    python bench/napo_step.py --variants share eff        # only (a) and (b)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sdpo_step import mem_available_gib, start_memory_guard  # noqa: E402  (one copy of the memory guard)
DATA = Path(os.environ.get("PREFREC_DATA", HERE.parent.parent / "shared" / "data"))
LABELS = {"share": "(a) share", "share_grad": "(c) share+grad", "own": "(d) no-share K", "eff": "(b) no-share Keff"}
ORDER = ["share", "share_grad", "own", "eff"]


# ----------------------------------------------------------------------------- memory helpers
def _status(key: str) -> float:
    """A /proc/self/status field in MiB (nan if absent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib() -> float:
    return _status("VmRSS")


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM, which ru_maxrss reads) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return maxrss_mib() <= rss_mib() + 1.0


def effective_negatives(k_own: int, batch: int, share_ratio: float) -> tuple[int, int]:
    """(neighbours k, effective negatives K + k*K) exactly as ``share_negatives`` computes them
    for a single-process batch of distinct examples."""
    from prefrec.lm.napo import num_shared

    k_nb = min(num_shared(share_ratio, batch), batch - 1)
    return k_nb, k_own + k_nb * k_own


TEMPLATE = ("This user has listened to {history} in the previous. Please predict the next music "
            "artist this user will listen to. Choose the answer from the following 20 artist names: "
            "{cands}. Answer:")


def synthetic_samples(n: int, seed: int, n_items: int = 500):
    """n LastFM-shaped samples (10 history + 20 candidates, catalog ids known) with synthetic
    artist names: no data needed (``--tiny`` default)."""
    from prefrec.lm.samples import LMSample

    rng = random.Random(f"napo-bench:{seed}")
    out = []
    for u in range(n):
        ids = rng.sample(range(n_items), 30)
        hist, cands = ids[:10], ids[10:]
        name = [f"Artist {i} Band" for i in range(n_items)]
        out.append(LMSample(prompt=TEMPLATE.format(history=", ".join(name[i] for i in hist),
                                                   cands=", ".join(name[i] for i in cands)),
                            history=[name[i] for i in hist], candidates=[name[i] for i in cands],
                            target_index=rng.randrange(20), user=u, history_ids=hist, item_ids=cands))
    return out


def make_cfg(a, variant: str, k: int, out_dir: str):
    """The trainer config of one variant (validated by the trainer's own checks)."""
    from prefrec.train.preference import PreferenceConfig, validate_config

    share = variant in ("share", "share_grad")
    loss = "sdpo" if (variant == "eff" and a.baseline == "sdpo") else "napo"
    cfg = PreferenceConfig(
        output_dir=out_dir, model="tiny" if a.tiny else a.model, dataset="llara-lastfm", data_dir=str(DATA),
        seed=a.seed, loss=loss, reference_free=True, beta=1.0, num_negatives=k,
        per_device_train_batch_size=a.batch, gradient_accumulation_steps=1, max_steps=a.steps,
        learning_rate=1e-5, warmup_ratio=0.0, max_grad_norm=0.3, lora_r=8, lora_alpha=32,
        lora_dropout=0.05, gradient_checkpointing=not a.no_gradient_checkpointing,
        napo={"share_negatives": share, "share_ratio": a.share_ratio, "detach_shared": variant != "share_grad",
              "sasrec": a.sasrec, "check_split": not a.no_check_split},
        plots=False, save_final_model=False)
    validate_config(cfg)
    return cfg


def build_objective_for(cfg, samples, a):
    """The trainer's objective; without ``--sasrec`` NAPO gets a random-init SASRec stand-in."""
    import torch

    from prefrec.train.preference import build_objective

    if cfg.loss != "napo" or cfg.napo.sasrec:
        return build_objective(cfg, 1), ("trainer (build_objective)" if cfg.loss != "napo"
                                         else f"SASRec run {cfg.napo.sasrec}")
    from prefrec.lm.napo import NapoObjective, napo_options
    from prefrec.models.sasrec import SASRec, SASRecConfig

    # napo_options refuses a config without napo.sasrec; the stand-in model is passed directly
    opts = napo_options(cfg.model_copy(update={"napo": cfg.napo.model_copy(update={"sasrec": "<stand-in>"})}), 1)
    n_items = 1 + max(max(s.item_ids) for s in samples)
    n_items = max(n_items, 1 + max(max(s.history_ids) for s in samples))
    with torch.random.fork_rng():
        torch.manual_seed(a.seed)
        seq = SASRec(SASRecConfig(n_items=n_items, hidden=64, blocks=2, max_len=10, dropout=0.2))
    return NapoObjective(opts, sasrec=seq), "stand-in: random-init SASRec (hidden 64), states/scores via attach_sequential_signals"


def negative_items(samples, rows, cols, share_ratio: float, share: bool):
    """Per example: distinct negative item ids and shared negatives equal to its own target,
    obtained by passing item ids through the real ``share_negatives`` (same neighbour choice)."""
    import torch

    from prefrec.lm.napo import STATE_KEY, share_negatives

    neg = torch.tensor([[samples[i].item_ids[j] for j in c] for i, c in zip(rows, cols[:, 1:].tolist())],
                       dtype=torch.float64)
    if share:
        states = torch.tensor([samples[i].extra[STATE_KEY] for i in rows], dtype=torch.float32)
        out = share_negatives(neg, None, states, torch.tensor(rows), share_ratio)
        vals, mask = out.values, out.mask
    else:
        vals, mask = neg, torch.ones_like(neg, dtype=torch.bool)
    distinct, target_hits = [], 0
    for r, i in enumerate(rows):
        ids = [int(v) for v, m in zip(vals[r].tolist(), mask[r].tolist()) if m]
        tgt = samples[i].item_ids[samples[i].target_index]
        target_hits += sum(1 for x in ids[neg.shape[1]:] if x == tgt)
        distinct.append(len(set(ids) - {tgt}))
    return sum(distinct) / len(distinct), target_hits


# ----------------------------------------------------------------------------- one variant
def run_variant(a, variant: str, k: int) -> dict:
    """Set up and time one variant in THIS process; returns a JSON-able dict."""
    import torch

    from prefrec.train.preference import (check_samples, load_reference_model, load_samples, preference_step,
                                          sample_negatives, setup_training)

    if a.threads:
        torch.set_num_threads(a.threads)
    t_setup = time.perf_counter()
    out_dir = tempfile.mkdtemp(prefix="napo_step_")
    cfg = make_cfg(a, variant, k, out_dir)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if a.samples == "synthetic":
        samples, src = synthetic_samples(a.batch, a.seed), "synthetic LastFM-shaped (ids 0..499)"
    else:
        samples, src = load_samples(cfg, "train", a.batch, cfg.seed), f"llara-lastfm train ({DATA})"
    if len(samples) < a.batch:
        raise SystemExit(f"only {len(samples)} samples for batch {a.batch}")
    objective, signals = build_objective_for(cfg, samples, a)
    model, tok = load_reference_model(cfg)
    check_samples(samples, k, tok, where="bench")  # K <= non-target candidates, titles tokenize
    model, params, _, optimizer, scheduler = setup_training(model, cfg, len(samples), 1)
    if hasattr(objective, "prepare"):
        objective.prepare(samples)  # SASRec states/scores once, as on the trainer's first step
    rows = list(range(a.batch))
    cols = sample_negatives(samples, k, cfg.seed, 0, False)
    ref = torch.zeros(len(rows), 1 + k)  # reference_free: the trainer's zero "reference"
    is_napo = cfg.loss == "napo"
    distinct, hits = (negative_items(samples, rows, cols, a.share_ratio, cfg.napo.share_negatives)
                      if is_napo else (float(k), 0))
    with torch.no_grad():  # page in every weight (mmapped safetensors) before the baseline is read
        _ = sum(float(p.sum()) for p in model.parameters())
    setup_s = time.perf_counter() - t_setup
    peak_reset = reset_peak()
    base_rss = rss_mib()
    base_max = maxrss_mib()

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    times, cpu, losses, negs, shared_k = [], [], [], [], []
    for _ in range(a.steps):
        t0, c0 = time.perf_counter(), cpu_s()
        loss, st = preference_step(model, tok, samples, rows, cols, ref, objective, cfg.beta,
                                   chunk=cfg.scoring_chunk)
        if not math.isfinite(st["loss"]):
            raise SystemExit(f"{variant}: non-finite loss {st['loss']}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_s() - c0)
        losses.append(st["loss"])
        negs.append(st.get("napo/negatives", float(k)))
        shared_k.append(st.get("napo/shared_k", 0.0))
    peak = maxrss_mib()
    return {"variant": variant, "k_own": k, "loss": cfg.loss, "share": cfg.napo.share_negatives and is_napo,
            "detach_shared": cfg.napo.detach_shared, "share_ratio": a.share_ratio, "batch": a.batch,
            "effective_negatives": statistics.mean(negs), "shared_k": statistics.mean(shared_k),
            "distinct_negative_items": distinct, "shared_equal_own_target": hits,
            "times": times, "median_s": statistics.median(times), "cpu_times": cpu,
            "median_cpu_s": statistics.median(cpu), "losses": losses,
            "rss_after_setup_mib": base_rss, "peak_rss_mib": peak, "peak_delta_mib": peak - base_rss,
            "peak_reset": peak_reset, "maxrss_before_steps_mib": base_max, "setup_s": setup_s,
            "threads": torch.get_num_threads(), "samples": src, "signals": signals if is_napo else "-",
            "model": cfg.model, "gradient_checkpointing": cfg.gradient_checkpointing,
            "load_avg_end": os.getloadavg()[0]}


def child_argv(a, variant: str, k: int) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--child-k", str(k),
            "--k", str(a.k), "--batch", str(a.batch), "--share-ratio", str(a.share_ratio),
            "--steps", str(a.steps), "--seed", str(a.seed), "--model", a.model, "--samples", a.samples,
            "--baseline", a.baseline, "--threads", str(a.threads)]
    if a.tiny:
        argv.append("--tiny")
    if a.sasrec:
        argv += ["--sasrec", a.sasrec]
    if a.no_check_split:
        argv.append("--no-check-split")
    if a.no_gradient_checkpointing:
        argv.append("--no-gradient-checkpointing")
    return argv


def run_child(a, variant: str, k: int, log_dir: Path) -> dict:
    log_p = log_dir / f"napo_step_{variant}_k{k}{'_tiny' if a.tiny else ''}.log"
    with log_p.open("w") as lf:
        proc = subprocess.run(child_argv(a, variant, k), stdout=subprocess.PIPE, stderr=lf, text=True)
    if proc.returncode == 3:
        raise SystemExit(f"{variant} K={k} aborted by the memory guard (machine low on memory); see {log_p}")
    if proc.returncode != 0:
        raise SystemExit(f"{variant} K={k} failed (exit {proc.returncode}); see {log_p}")
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1])


# ----------------------------------------------------------------------------- report
def format_table(results: list[dict], ref: dict | None) -> str:
    head = (f"{'variant':<18} {'K own':>5} {'nbrs':>4} {'eff neg':>7} {'distinct':>8} {'s/step':>8} "
            f"{'CPU s':>7} {'peak dRSS GiB':>13} {'time/(b)':>8} {'mem/(b)':>7}  loss[0]")
    lines = [head, "-" * len(head)]
    for r in results:
        tr = mr = "-"
        if ref is not None:
            tr = f"{r['median_s'] / ref['median_s']:.2f}x"
            mr = (f"{r['peak_delta_mib'] / ref['peak_delta_mib']:.2f}x" if ref["peak_delta_mib"] > 1.0 else "n/a")
        label = "(b) S-DPO Keff" if r["variant"] == "eff" and r["loss"] == "sdpo" else LABELS[r["variant"]]
        lines.append(f"{label:<18} {r['k_own']:>5d} {r['shared_k']:>4.0f} "
                     f"{r['effective_negatives']:>7.1f} {r['distinct_negative_items']:>8.1f} "
                     f"{r['median_s']:>8.3f} {r['median_cpu_s']:>7.2f} {r['peak_delta_mib'] / 1024:>13.3f} "
                     f"{tr:>8} {mr:>7}  {r['losses'][0]:.4f}")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama (model: tiny), seconds per run")
    ap.add_argument("--model", default="smollm2-135m", help="model for the non-tiny run (default: load_lm())")
    ap.add_argument("--k", type=int, default=3, help="own negatives per example in (a)/(c)/(d)")
    ap.add_argument("--batch", type=int, default=4, help="examples per step (= the sharing pool)")
    ap.add_argument("--share-ratio", type=float, default=1.0, help="k = int(ratio * (batch - 1)) neighbours")
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps per variant (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", choices=ORDER, default=ORDER)
    ap.add_argument("--baseline", choices=["napo", "sdpo"], default="napo",
                    help="objective of (b): NAPO without sharing (same margin) or reference-free S-DPO")
    ap.add_argument("--samples", choices=["auto", "lastfm", "synthetic"], default="auto",
                    help="auto = synthetic with --tiny, LastFM training prompts otherwise")
    ap.add_argument("--sasrec", help="SASRec run dir for user states/scores (default: random-init stand-in)")
    ap.add_argument("--no-check-split", action="store_true", help="skip the trainer's SASRec split check")
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per child (0 = torch default)")
    ap.add_argument("--in-process", action="store_true",
                    help="run all variants in this process (fast smoke test; memory deltas of later variants "
                         "are then understated by memory the allocator kept from earlier ones)")
    ap.add_argument("--log-dir", default="/tmp")
    ap.add_argument("--json", help="also write all results to this file")
    ap.add_argument("--mem-floor-gib", type=float, default=2.5, help="children abort below this MemAvailable")
    ap.add_argument("--child", choices=ORDER, help=argparse.SUPPRESS)
    ap.add_argument("--child-k", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.samples == "auto":
        a.samples = "synthetic" if a.tiny else ("lastfm" if (DATA / "llara-lastfm").exists() else "synthetic")
    if a.samples == "lastfm" and not (DATA / "llara-lastfm").exists():
        ap.error(f"llara-lastfm not found under {DATA} (set PREFREC_DATA or use --samples synthetic)")
    if a.sasrec and not Path(a.sasrec).exists():
        ap.error(f"--sasrec {a.sasrec}: no such folder")
    return a


def main(argv=None) -> list[dict]:
    a = parse_args(argv)
    if a.child:
        start_memory_guard(a.mem_floor_gib)
        print(json.dumps(run_variant(a, a.child, a.child_k)), flush=True)
        return []
    k_nb, k_eff = effective_negatives(a.k, a.batch, a.share_ratio)
    avail = 19  # 20 candidates per LastFM prompt (and per synthetic one); check_samples re-checks in the child
    print(f"NAPO sharing: batch {a.batch}, K own {a.k}, share_ratio {a.share_ratio} -> k = min(int({a.share_ratio} * "
          f"({a.batch} - 1)), {a.batch - 1}) = {k_nb} neighbours, effective negatives K + k*K = {k_eff}", flush=True)
    if k_eff > avail and "eff" in a.variants:
        print(f"note: (b) needs K = {k_eff} own negatives but only {avail} non-target candidates exist; "
              f"(b) runs at K = {avail}", flush=True)
        k_eff = avail
    plan = {"share": a.k, "share_grad": a.k, "own": a.k, "eff": k_eff}
    print(f"model {'tiny (tiny_lm)' if a.tiny else a.model}, samples {a.samples}, steps {a.steps}, threads "
          f"{a.threads or 'default'}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"{'in-process' if a.in_process else 'one subprocess per variant'}, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    results = []
    for v in [x for x in ORDER if x in a.variants]:
        r = run_variant(a, v, plan[v]) if a.in_process else run_child(a, v, plan[v], Path(a.log_dir))
        results.append(r)
        print(f"{LABELS[v]:<18} K={r['k_own']:2d}: {r['median_s']:.3f} s/step (steps {[round(t, 3) for t in r['times']]}), "
              f"CPU {r['median_cpu_s']:.2f} s/step, peak RSS +{r['peak_delta_mib'] / 1024:.3f} GiB over "
              f"{r['rss_after_setup_mib'] / 1024:.2f} GiB{'' if r['peak_reset'] else ' (peak NOT reset: load transient may dominate)'}, "
              f"negatives used {r['effective_negatives']:.1f}, losses {[round(x, 4) for x in r['losses']]}", flush=True)
    ref = next((r for r in results if r["variant"] == "eff"), None)
    print()
    print(format_table(results, ref))
    first = results[0]
    print(f"\nsamples: {first['samples']}; signals: {next((r['signals'] for r in results if r['signals'] != '-'), '-')}; "
          f"gradient checkpointing {first['gradient_checkpointing']}; torch threads {first['threads']}; "
          f"load average at end {os.getloadavg()[0]:.1f}")
    print("eff neg = negatives per example used by the loss (step metric napo/negatives); distinct = distinct "
          "negative items per example (excluding its target); shared negatives equal to the example's own target: "
          + ", ".join(f"{r['variant']} {r['shared_equal_own_target']}" for r in results))
    bad = [r["variant"] for r in results
           if r["effective_negatives"] != (k_eff if r["variant"] == "eff" else (a.k + k_nb * a.k if r["share"] else a.k))]
    if bad:
        print(f"WARNING: negatives used differ from the formula for {bad}")
    if a.json:
        Path(a.json).write_text(json.dumps({"k_neighbours": k_nb, "k_eff": k_eff, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
