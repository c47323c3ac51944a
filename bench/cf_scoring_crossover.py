"""Benchmark: per-row negative scoring paths (forward + backward), to place the ``auto`` rule.

Not a test. For batch B = 1024, d = 64, one torch thread, random L2-normalised tables and
uniform draws, times ``per_row_scores(u, items, neg, method)`` forward plus backward of a
weighted sum (the loss's gradient is a dense (B, N) matrix, as in training) for
- ``dense``: (B, |I|) matmul + gather, backward scatter + two (B, |I|) matmuls (with the
  trainer's reused workspace);
- ``bag``: sort the B*N pairs by item, embedding-bag gather-dot, two embedding-bag backwards;
- ``gather``: (B, N, d) gather + bmm (autograd), skipped above 300 MB.
over a grid of catalogue sizes |I| and negatives N, prints CPU seconds per call (median of
``--reps``) and, per |I|, the fitted crossover ``|I| / N`` where dense and bag cost the same.
The ``auto`` rule (prefrec.cf.scoring.DENSE_ITEMS_PER_NEGATIVE) is set from these numbers.

    python bench/cf_scoring_crossover.py
    python bench/cf_scoring_crossover.py --items 1200 41000 --negatives 100 1000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, nargs="+", default=[1200, 5000, 20000, 41000])
    ap.add_argument("--negatives", type=int, nargs="+", default=[100, 300, 1000, 4000])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from prefrec.cf import scoring as S

    torch.set_num_threads(args.threads)
    print(f"# bench/cf_scoring_crossover.py  torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"B={args.batch}, d={args.dim}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# auto rule now: dense iff |I| <= {S.DENSE_ITEMS_PER_NEGATIVE} * N")
    g = torch.Generator().manual_seed(0)
    print("| |I| | N | dense CPU-s | bag CPU-s | gather CPU-s | fastest | auto picks |")
    print("|---|---|---|---|---|---|---|")
    for n_items in args.items:
        I0 = F.normalize(torch.randn(n_items, args.dim, generator=g), dim=1)
        U0 = F.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1)
        ws = S.Workspace()
        for n in args.negatives:
            neg = torch.randint(0, n_items, (args.batch, n), generator=g)
            w = torch.rand(args.batch, n, generator=g)
            res = {}
            for method in ("dense", "bag", "gather"):
                if method == "gather" and args.batch * n * args.dim * 4 > 300e6:
                    res[method] = float("nan")
                    continue
                times = []
                for _ in range(args.reps + 1):
                    u, it = U0.clone().requires_grad_(), I0.clone().requires_grad_()
                    c = time.process_time()
                    (S.per_row_scores(u, it, neg, method, ws) * w).sum().backward()
                    times.append(time.process_time() - c)
                res[method] = statistics.median(times[1:])
            best = min((v, k) for k, v in res.items() if v == v)[1]
            auto = S.choose_method(n_items, n)
            print(f"| {n_items} | {n} | {res['dense']:.4f} | {res['bag']:.4f} | {res['gather']:.4f} | {best} | {auto} |")
        ws.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
