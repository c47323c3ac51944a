"""Benchmark: LM evaluation cost per test case on SmolLM2-135M (CPU).

Prints seconds per case for
  1. generation eval (greedy, <= 20 new tokens, batched, left padding),
  2. ranking eval via the shared prompt (:func:`prefrec.lm.scoring.candidate_logps`),
  3. ranking via naive per-candidate concatenation (:func:`naive_candidate_logps`, the peer way),
and the ratios, with ``torch.set_flush_denormal`` on and off. ``--train`` adds forward+backward
of 1 chosen + K rejected answers (the S-DPO step), shared vs naive.

    python bench/lm_eval.py --cases 24                 # ml-100k prompts (20 candidates each)
    python bench/lm_eval.py --cases 24 --dataset lastfm

Not a test: numbers depend on the machine and its load (printed). Cases come from
``prefrec.lm.prompts.lm_samples`` when it exists, else from a built-in S-DPO-style movie template
over ml-100k's last 10 interactions per user with 19 random negatives.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PREFREC_DATA", REPO.parent / "shared" / "data"))


def fallback_ml100k_samples(n: int, seed: int = 0):
    """S-DPO movie-style prompts built from raw ml-100k (used only without prefrec.lm.prompts)."""
    from prefrec.lm.samples import LMSample

    titles = {}
    for line in (DATA / "ml-100k" / "u.item").read_bytes().decode("latin-1").splitlines():
        f = line.split("|")
        titles[int(f[0])] = f[1]
    by_user: dict[int, list[tuple[int, int]]] = {}
    for line in (DATA / "ml-100k" / "u.data").read_text().splitlines():
        u, i, _, t = map(int, line.split("\t"))
        by_user.setdefault(u, []).append((t, i))
    rng = random.Random(seed)
    items = sorted(titles)
    out = []
    for u in sorted(by_user)[:n]:
        seq = [i for _, i in sorted(by_user[u])]
        hist, target = seq[-11:-1], seq[-1]
        negs = rng.sample([i for i in items if i != target and i not in hist], 19)
        cands = negs + [target]
        rng.shuffle(cands)
        ht, ct = [titles[i] for i in hist], [titles[i] for i in cands]
        prompt = ("This user has watched " + ", ".join(ht) + " in the previous. Please predict the next "
                  "movie this user will watch. Choose the answer from the following 20 movie titles: "
                  + ", ".join(ct) + ". Answer:")
        out.append(LMSample(prompt=prompt, history=ht, candidates=ct, target_index=cands.index(target), user=u))
    return out


def get_samples(dataset: str, n: int, seed: int):
    try:
        from prefrec.lm.prompts import lm_samples
    except ImportError:
        if dataset != "ml-100k":
            sys.exit(f"prefrec.lm.prompts is not available; only --dataset ml-100k has a fallback")
        return fallback_ml100k_samples(n, seed), "fallback template"
    return lm_samples(dataset, "test", data_dir=str(DATA), limit=n, seed=seed), "prefrec.lm.prompts"


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--cases", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gen-batch", type=int, default=8)
    ap.add_argument("--rank-batch", type=int, default=4, help="prompts per shared-prefix forward")
    ap.add_argument("--naive-cases", type=int, default=0,
                    help="time the naive ranking on only the first N cases (0 = all; it is the slow one)")
    ap.add_argument("--naive-chunk", type=int, default=20, help="sequences per naive forward")
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--train", action="store_true", help="also time forward+backward, 1+K answers")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--denormal", choices=["both", "on", "off"], default="both")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from prefrec.lm.evaluate import generate_answers
    from prefrec.lm.scoring import candidate_logps, naive_candidate_logps
    from prefrec.models.lm import load_lm

    t0 = time.perf_counter()
    model, tok = load_lm(args.model)
    model.eval()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params, "
          f"attn={model.config._attn_implementation}, threads={torch.get_num_threads()}")
    samples, src = get_samples(args.dataset, args.cases, args.seed)
    n = len(samples)
    plen = [len(tok(s.prompt)["input_ids"]) for s in samples]
    alen = [len(tok(" " + c)["input_ids"]) + 1 for s in samples for c in s.candidates]
    print(f"{n} cases from {src} ({args.dataset}): prompt tokens mean {sum(plen) / n:.0f} "
          f"(max {max(plen)}), answer tokens mean {sum(alen) / len(alen):.1f}, "
          f"{len(samples[0].candidates)} candidates")

    prompts = [s.prompt for s in samples]
    cands = [s.candidates for s in samples]

    scores: dict[str, torch.Tensor] = {}

    def rank_shared():
        scores["shared"] = torch.cat([
            candidate_logps(model, tok, prompts[i:i + args.rank_batch], cands[i:i + args.rank_batch])
            for i in range(0, n, args.rank_batch)])

    n_naive = min(n, args.naive_cases or n)

    def rank_naive():
        scores["naive"] = torch.cat([
            naive_candidate_logps(model, tok, prompts[i:i + 1], cands[i:i + 1], chunk=args.naive_chunk)
            for i in range(n_naive)])

    def gen():
        generate_answers(model, tok, prompts, max_new_tokens=20, batch_size=args.gen_batch)

    K = args.k

    def train_shared():
        for i in range(n):
            lp = candidate_logps(model, tok, prompts[i:i + 1], [cands[i][:1 + K]], grad=True)
            lp.sum().backward()
        model.zero_grad(set_to_none=True)

    def train_naive():
        for i in range(n):
            lp = naive_candidate_logps(model, tok, prompts[i:i + 1], [cands[i][:1 + K]], grad=True)
            lp.sum().backward()
        model.zero_grad(set_to_none=True)

    candidate_logps(model, tok, prompts[:1], cands[:1])  # warm-up

    settings = {"both": [True, False], "on": [True], "off": [False]}[args.denormal]
    for flush in settings:
        torch.set_flush_denormal(flush)
        load = os.getloadavg()[0]
        res = {}
        if not args.skip_generate:
            res["generate"] = timed(gen) / n
        res["rank_shared"] = timed(rank_shared) / n
        res["rank_naive"] = timed(rank_naive) / n_naive
        if args.train:
            res["train_shared"] = timed(train_shared) / n
            res["train_naive"] = timed(train_naive) / n
        print(f"\nflush_denormal={flush} (load avg at start {load:.1f}; generate and rank_shared over {n} cases, "
              f"rank_naive over the first {n_naive}):")
        for k, v in res.items():
            print(f"  {k:14s} {v:8.3f} s/case")
        print(f"  naive / shared ranking  = {res['rank_naive'] / res['rank_shared']:.2f}x")
        b = scores["naive"]
        a = scores["shared"][:len(b)]
        same_top = (a.argmax(1) == b.argmax(1)).float().mean().item()
        same_order = (a.argsort(1, descending=True) == b.argsort(1, descending=True)).all(1).float().mean().item()
        print(f"  parity, {len(b)} cases x {a.shape[1]} candidates: max |shared - naive| = "
              f"{(a - b).abs().max().item():.2e} nats (max relative {((a - b).abs() / b.abs()).max().item():.1e}); "
              f"same top-1 in {same_top:.0%} of cases, same full ranking in {same_order:.0%}")
        if "generate" in res:
            print(f"  generate / shared rank  = {res['generate'] / res['rank_shared']:.2f}x")
        if args.train:
            print(f"  naive / shared train step (1+{K} answers) = {res['train_naive'] / res['train_shared']:.2f}x")
    torch.set_flush_denormal(True)


if __name__ == "__main__":
    main()
