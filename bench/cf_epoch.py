"""Benchmark: one CF training epoch and one full-ranking evaluation on Gowalla (MF + PSL-tanh).

Not a test. Setting (the paper's protocol, research/cf_side.md §3/§6): IR-Benchmark
``iid/gowalla`` (29,858 users x 40,988 items, 737,091 training rows after the 10% validation
holdout, seed 2024), MF d=64 with L2-normalised embeddings, PSL-tanh (paper tau 0.05), Adam
lr 0.1, batch 1024, 1000 negatives per row. Everything timed is the library's own code path:

- per-row mode: :func:`prefrec.train.cf.batch_loss` (``NegativeSampler.sample`` + dense scoring
  with the trainer's workspace) + backward + the trainer's optimiser, for ``--batches`` batches
  after ``--warmup`` batches; seconds/epoch = seconds/batch x batches/epoch (extrapolated).
- shared mode: the same loop with ``mode="shared"`` for ``--shared-batches`` batches after the
  warm-up, extrapolated the same way (a full epoch is 720 batches; on a loaded machine that is
  many minutes of wall time, hence measured batches).
- evaluation: :func:`prefrec.train.cf.evaluate` (``evaluate_full``) on the validation split,
  Recall/NDCG at K = 5, 10, 20, 50 in one pass, on the model after the shared-mode batches.

Floors (issue 17), measured in the same run, each op timed alone on the batch's shapes:
- per-row floor: draw the B*N uniforms (``torch.rand(B, N, float64)``, what the exact sampler
  needs at least), three weighted gathers of B*N item rows (``F.embedding_bag`` with
  per-sample weights over the item table: the forward scores, d/du and d/d items each touch
  every drawn (row, item) pair's d-vector once; ~0.4 GFLOP in all), one ``exp`` over (B, N)
  (the least a softmax loss does) and one fused Adam step over the model's tables (the paper's
  optimiser is dense Adam over the full tables, so every step pays it);
- shared floor: the three (B, d) x (d, N) matmuls of the shared batch (forward scores, d/du,
  d/d negatives; ~0.4 GFLOP), one ``exp`` over (B, N) and the same Adam step.
Each is also printed without the Adam step (the arithmetic-only floor).

Baselines measured in the same run (same data, same process, same sampler):
- previous path: prefrec's choices before issue 17 (per-row: dense (B, |I|) scoring, which
  ``auto`` picked at 1000 negatives; both modes: autograd ``F.normalize`` and the unblocked fused
  loss; the sampler's per-batch count table is toggled off, its batch-local search is not: the
  old global search was ~0.01 s slower per 1M draws), run
  interleaved with the current path, ``--rounds`` alternating blocks, so load changes hit both.
- naive per-row step: un-normalised tables, gather (B, N, d) and ``F.cosine_similarity`` (the
  peer's computation), the autograd loss of :mod:`prefrec.losses`, plain ``torch.optim.Adam``;
  ``--naive-batches`` batches after one warm-up.
- plain evaluation: the same chunked matmul evaluation with a fresh score matrix per chunk,
  full ``torch.topk`` and a dense (chunk x |I|) relevance matrix (prefrec's previous version).

Peer constants (NOT measured by this script): 2.75 s/batch per-row (~33 min/epoch) and 8.9 s
for ONE K of ``eval_metrics`` on the validation split, measured earlier on this machine with
the peer's code (Tiny-Snow/IR-Benchmark); the load at that time is not known. The machine is
shared, so the script prints the load average and CPU seconds next to wall seconds, and
ratios against the baselines measured in the same run (the robust figures).

    python bench/cf_epoch.py                      # defaults: 20 per-row, 100 shared, 2 naive batches
    python bench/cf_epoch.py --batches 10 --shared-batches 50
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("PREFREC_DATA", HERE.parent.parent / "shared" / "data"))

PEER_PER_ROW_BATCH_S = 2.75
PEER_EPOCH_MIN = 33.0
PEER_EVAL_ONE_K_S = 8.9


class Timer:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() - self.c


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def plain_evaluate(user_emb, item_emb, train, truth, ks, chunk=1024):
    """Baseline: the straightforward chunked evaluation (fresh (chunk, |I|) tensors, full topk,
    dense relevance matrix), i.e. prefrec's evaluate_full before the blocked top-k."""
    import numpy as np
    import torch

    from prefrec.cf.evaluate import _rows
    from prefrec.metrics import ranking

    ks = sorted(ks)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("Recall", "NDCG")}
    n_users, n_items = user_emb.shape[0], item_emb.shape[0]
    for s in range(0, n_users, chunk):
        e = min(s + chunk, n_users)
        scores = user_emb[s:e] @ item_emb.T
        r, c = _rows(train, s, e)
        scores[r, c] = -torch.inf
        top = torch.topk(scores, ks[-1], dim=1, sorted=True).indices
        rel = torch.zeros(e - s, n_items, dtype=torch.bool)
        r, c = _rows(truth, s, e)
        rel[r, c] = True
        hits = rel.gather(1, top).numpy()
        for key, v in ranking.sums_for(hits, truth.counts[s:e], ks).items():
            sums[key] += v
    return {k: v / n_users for k, v in sums.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--batches", type=int, default=20, help="timed per-row batches")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--naive-batches", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for everything timed (default 1: on the shared 2-core machine two "
                         "threads spin-wait on each other and were 2-6x slower in wall time)")
    ap.add_argument("--shared-batches", type=int, default=100, help="timed shared-mode batches")
    ap.add_argument("--rounds", type=int, default=2, help="alternating current/previous blocks per mode")
    ap.add_argument("--floor-reps", type=int, default=10)
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation section")
    ap.add_argument("--dataset", default="gowalla", help="any CF dataset name (the doc's figures are for gowalla)")
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from prefrec.cf.config import CFConfig
    from prefrec.cf.sampling import NegativeSampler
    from prefrec.cf.scoring import Workspace, naive_cosine_scores
    from prefrec.losses import make_loss
    from prefrec.train.cf import batch_loss, build_loss, build_model, evaluate, load_splits, make_optimizer

    torch.set_num_threads(args.threads)
    cfg = CFConfig.model_validate({
        "name": f"bench-{args.dataset}", "seed": 2024,
        "data": {"dataset": args.dataset, "valid": "holdout"},
        "model": {"name": "mf", "dim": 64, "norm": True},
        "loss": {"name": "psl", "activation": "tanh", "tau": 0.05},
        "train": {"epochs": 1, "batch_size": 1024, "lr": 0.1, "negatives": 1000, "negative_mode": "per_row",
                  "ks": [5, 10, 20, 50], "progress": False},
    })
    print(f"# bench/cf_epoch.py  torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average at start {load_avg()}")
    with Timer() as t:
        splits = load_splits(cfg, args.data_dir)
    n_rows = len(splits.train)
    n_batches = math.ceil(n_rows / cfg.train.batch_size)
    print(f"data: {args.dataset} {splits.n_users} users x {splits.n_items} items, {n_rows} training rows "
          f"({n_batches} batches of 1024), {splits.info['valid']} validation pairs; loaded in {t.wall:.1f} s")

    torch.manual_seed(cfg.seed)
    loss_fn, scale = build_loss(cfg)  # the trainer's (fused) loss
    plain_loss = make_loss("psl", tau=cfg.loss.tau, activation=cfg.loss.activation)  # autograd version
    rows_u = torch.from_numpy(splits.train.users)
    rows_i = torch.from_numpy(splits.train.indices)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(0))

    def batch(b):
        idx = perm[(b % n_batches) * 1024:((b % n_batches) + 1) * 1024]
        return rows_u[idx], rows_i[idx]

    # -- naive per-row baseline (same run) --------------------------------------------------------
    model = build_model(cfg, splits)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    sampler = NegativeSampler(splits.train, seed=1)

    def naive_step(b):
        users, pos = batch(b)
        Uw, Iw = model.user.weight, model.item.weight
        sp = F.cosine_similarity(Uw[users], Iw[pos], dim=-1, eps=1e-8)
        sn = naive_cosine_scores(Uw[users], Iw, sampler.sample(users, cfg.train.negatives))
        loss = plain_loss(sp * scale, sn * scale).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    naive_step(0)
    with Timer() as t:
        for b in range(1, 1 + args.naive_batches):
            naive_step(b)
    naive_s = t.wall / args.naive_batches
    naive_cpu = t.cpu / args.naive_batches
    del model, opt

    # -- prefrec per-row and shared (train/cf.py batch_loss, the trainer's optimiser/workspace) --
    import prefrec.cf.normalize as norm_mod

    import prefrec.cf.fused as fused_mod

    fast_norm, block_rows = norm_mod.normalize_rows, fused_mod.BLOCK_ROWS
    table_cells = NegativeSampler.TABLE_CELLS_PER_DRAW

    def make_runner(mode: str, scoring: str, previous: bool):
        model = build_model(cfg, splits)
        opt = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
        sampler = NegativeSampler(splits.train, seed=1)
        ws = Workspace()
        state = {"b": 0, "last": float("nan")}

        def run(n: int) -> tuple[float, float]:
            norm_mod.normalize_rows = (lambda x: F.normalize(x, dim=1)) if previous else fast_norm
            fused_mod.BLOCK_ROWS = 1 << 30 if previous else block_rows
            NegativeSampler.TABLE_CELLS_PER_DRAW = 0.0 if previous else table_cells
            try:
                with Timer() as t:
                    for _ in range(n):
                        users, pos = batch(state["b"])
                        loss = batch_loss(model, users, pos, sampler, loss_fn, scale, cfg.train.negatives,
                                          mode, scoring, ws)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        state["last"] = loss.item()
                        state["b"] += 1
            finally:
                norm_mod.normalize_rows, fused_mod.BLOCK_ROWS = fast_norm, block_rows
                NegativeSampler.TABLE_CELLS_PER_DRAW = table_cells
            return t.wall, t.cpu

        run.model, run.state, run.sampler, run.opt = model, state, sampler, opt
        return run

    def compare(mode: str, n: int):
        """(current, previous) runners and their per-batch (wall, cpu) over interleaved rounds."""
        cur = make_runner(mode, "auto", False)
        prev = make_runner(mode, "dense" if mode == "per_row" else "auto", True)
        tot = {"cur": [0.0, 0.0], "prev": [0.0, 0.0]}
        for r in (cur, prev):
            r(args.warmup)
        per = max(1, n // args.rounds)
        for _ in range(args.rounds):
            for key, r in (("cur", cur), ("prev", prev)):
                w, c = r(per)
                tot[key][0] += w
                tot[key][1] += c
        k = per * args.rounds
        return cur, prev, (tot["cur"][0] / k, tot["cur"][1] / k), (tot["prev"][0] / k, tot["prev"][1] / k)

    def op_time(fn) -> float:
        fn()
        with Timer() as t:
            for _ in range(args.floor_reps):
                fn()
        return t.cpu / args.floor_reps

    def floors(model, opt) -> dict[str, float]:
        """CPU-s of each floor component on this batch's shapes (module doc)."""
        B, N, d = cfg.train.batch_size, cfg.train.negatives, cfg.model.dim
        g = torch.Generator().manual_seed(5)
        W = model.item.weight.detach()
        flat = torch.randint(0, splits.n_items, (B * N,), generator=g)
        off = torch.arange(0, B * N, N)
        w = torch.rand(B * N, generator=g)
        u, V, G = torch.randn(B, d, generator=g), torch.randn(N, d, generator=g), torch.randn(B, N, generator=g)
        for p in model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return {
            "rand": op_time(lambda: torch.rand(B, N, dtype=torch.float64, generator=g)),
            "bag3": 3 * op_time(lambda: F.embedding_bag(flat, W, off, mode="sum", per_sample_weights=w)),
            "mm3": op_time(lambda: (u @ V.T, G @ V, G.T @ u)),
            "exp": op_time(lambda: torch.exp(G)),
            "adam": op_time(opt.step),
        }

    cur, prev, (per_row_s, per_row_cpu), (prev_s, prev_cpu) = compare("per_row", args.batches)
    last, sampler = cur.state["last"], cur.sampler
    with Timer() as t:
        for _ in range(args.batches):
            sampler.sample(batch(0)[0], cfg.train.negatives)
    sample_s, sample_cpu = t.wall / args.batches, t.cpu / args.batches
    fl = floors(cur.model, cur.opt)
    floor_pr = fl["rand"] + fl["bag3"] + fl["exp"] + fl["adam"]
    floor_sh = fl["mm3"] + fl["exp"] + fl["adam"]

    from prefrec.cf.scoring import choose_method

    print("\n## per-row negatives (1000 per row, the paper's protocol)")
    print(f"prefrec   : {per_row_s:.3f} s/batch wall ({per_row_cpu:.3f} s CPU), scoring auto -> "
          f"{choose_method(splits.n_items, cfg.train.negatives)}, {args.batches} batches after {args.warmup} "
          f"warm-up (sampling alone {sample_s:.3f} s wall, {sample_cpu:.3f} s CPU); last loss {last:.4f}")
    print(f"            extrapolated epoch = {per_row_s:.3f} s x {n_batches} batches = "
          f"{per_row_s * n_batches:.0f} s ({per_row_s * n_batches / 60:.1f} min) wall, "
          f"{per_row_cpu * n_batches / 60:.1f} CPU-min")
    print(f"previous  : {prev_s:.3f} s/batch wall ({prev_cpu:.3f} s CPU) (dense scoring, autograd F.normalize, unblocked loss, searched draws; "
          f"interleaved in {args.rounds} rounds) -> {prev_cpu / per_row_cpu:.2f}x CPU, {prev_s / per_row_s:.2f}x wall")
    print(f"floor     : {floor_pr:.4f} CPU-s = rand {fl['rand']:.4f} + 3 bags {fl['bag3']:.4f} + exp {fl['exp']:.4f} "
          f"+ Adam {fl['adam']:.4f} -> prefrec at {per_row_cpu / floor_pr:.2f}x its floor "
          f"({per_row_cpu / (floor_pr - fl['adam']):.2f}x the arithmetic-only floor); goal <= 3x")
    print(f"naive     : {naive_s:.3f} s/batch wall ({naive_cpu:.3f} s CPU), mean of {args.naive_batches} batches "
          f"after 1 warm-up (gather + F.cosine_similarity on raw tables, plain Adam; measured in this run)")
    print(f"speed-up  : {naive_s / per_row_s:.1f}x wall ({naive_cpu / per_row_cpu:.1f}x CPU) vs the naive baseline "
          f"measured in this run; {PEER_PER_ROW_BATCH_S / per_row_s:.1f}x vs the peer constant "
          f"{PEER_PER_ROW_BATCH_S} s/batch (goal >= 5x); epoch {PEER_EPOCH_MIN * 60 / (per_row_s * n_batches):.1f}x "
          f"vs peer ~{PEER_EPOCH_MIN:.0f} min")

    # -- shared mode -------------------------------------------------------------------------------
    cur_sh, _, (sh_s, sh_cpu), (psh_s, psh_cpu) = compare("shared", args.shared_batches)
    sh_last, model = cur_sh.state["last"], cur_sh.model
    print("\n## shared negatives (one set of 1000 distinct items per batch, positives masked)")
    print(f"prefrec   : {sh_s:.3f} s/batch wall ({sh_cpu:.4f} s CPU), {args.shared_batches} batches after "
          f"{args.warmup} warm-up; last loss {sh_last:.4f}")
    print(f"            extrapolated epoch = {sh_s:.3f} s x {n_batches} = {sh_s * n_batches:.1f} s wall "
          f"({sh_cpu * n_batches:.1f} CPU-s); goal < 30 s/epoch")
    print(f"previous  : {psh_s:.3f} s/batch wall ({psh_cpu:.4f} s CPU) (autograd F.normalize, unblocked loss, searched draws; interleaved) -> "
          f"{psh_cpu / sh_cpu:.2f}x CPU")
    print(f"floor     : {floor_sh:.4f} CPU-s = 3 matmuls {fl['mm3']:.4f} + exp {fl['exp']:.4f} + Adam {fl['adam']:.4f} "
          f"-> prefrec at {sh_cpu / floor_sh:.2f}x its floor ({sh_cpu / (floor_sh - fl['adam']):.2f}x the "
          "arithmetic-only floor); goal <= 3x")
    print(f"speed-up  : {naive_s / sh_s:.0f}x vs the naive per-row baseline in this run (different protocol: shared set)")

    # -- evaluation (on the model from the shared-mode batches above) -----------------------------
    if args.no_eval:
        print(f"\nload average at end {load_avg()}.")
        return 0
    evaluate(model, splits, splits.valid, cfg)  # warm-up
    with Timer() as t:
        m = evaluate(model, splits, splits.valid, cfg)
    eval_s, eval_cpu = t.wall, t.cpu
    with torch.no_grad():
        U, I = model.user_item_embeddings()
        with Timer() as t:
            mp = plain_evaluate(U, I, splits.train, splits.valid, cfg.train.ks)
    same = all(abs(m[k] - mp[k]) < 1e-6 for k in mp)
    print("\n## full-ranking evaluation, validation split, all 40,988 items, K = 5, 10, 20, 50 in one pass")
    print(f"prefrec   : {eval_s:.2f} s wall ({eval_cpu:.2f} s CPU); goal < 10 s")
    print("            " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()) + " (model after the shared-mode batches above)")
    print(f"plain     : {t.wall:.2f} s wall ({t.cpu:.2f} s CPU), same metrics: {same} (measured in this run)")
    print(f"speed-up  : {t.wall / eval_s:.1f}x vs the plain evaluation in this run; "
          f"{PEER_EVAL_ONE_K_S / eval_s:.1f}x vs the peer constant {PEER_EVAL_ONE_K_S} s for ONE K "
          f"({4 * PEER_EVAL_ONE_K_S / eval_s:.1f}x for the peer's 4 K)")
    print(f"\nload average at end {load_avg()}. Peer constants ({PEER_PER_ROW_BATCH_S} s/batch, ~{PEER_EPOCH_MIN:.0f} "
          f"min/epoch, {PEER_EVAL_ONE_K_S} s/K) were measured earlier on this machine with the peer's code; "
          "they are constants in this script, not measured in this run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
