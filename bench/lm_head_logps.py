"""Micro-benchmark, not a test: old vs new log-prob head of prefrec.lm.scoring.packed_candidate_logps on
synthetic logits (B=4 prompts, C=20 answers padded to L=11 tokens, ~101 kept columns, V=49152, one thread).

    python bench/lm_head_logps.py
"""
import time

import torch

torch.set_num_threads(1); torch.set_flush_denormal(True)
B, C, L, V = 4, 20, 11, 49152     # L = longest answer (incl. EOS) among the 20 titles
Tk = 1 + C * 5                     # kept columns: P-1 + ~5 tokens per answer
g = torch.Generator().manual_seed(0)
src = torch.randint(0, Tk, (B, C * L), generator=g); tgt = torch.randint(0, V, (B, C * L), generator=g)
def old(logits):
    picked = logits.gather(1, src.unsqueeze(-1).expand(B, C * L, V)).float()
    return (picked.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, -1)).sum()
def new(logits):
    lse = torch.logsumexp(logits.float(), -1)
    b = torch.arange(B).unsqueeze(1)
    return (logits[b, src, tgt].float() - lse.gather(1, src)).sum()
base = torch.randn(B, Tk, V, generator=g)
for f in (old, new, old, new):
    x = base.clone().requires_grad_(True)
    t0 = time.perf_counter(); y = f(x); y.backward(); dt = time.perf_counter() - t0
    print(f.__name__, f"{dt:.3f} s fwd+bwd", f"value {y.item():.4f}")
