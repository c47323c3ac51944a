"""GPU check: SFT and S-DPO training steps on randomly initialised Llama-shaped models.

Not a test (tests/test_bench_gpu_check.py runs it on the CPU at a tiny shape). No weights and no
tokenizer are needed: prompts and answers are random token ids of realistic lengths (LastFM-like:
~160-token prompts, 5-token answers, 20 candidates), so it runs on a machine that can download
nothing. Per shape and precision (fp32, and bf16 mixed precision as ``precision: bf16`` trains):

* **parity**: the S-DPO and SFT losses of the same weights and batch under bf16 vs fp32;
* **SFT step** (LoRA r=8 on the seven projections, AdamW): wall time, tokens/s, achieved TFLOP/s;
* **S-DPO step**, K = 3 and 19: prefrec's shared-prefix scoring vs the naive 1+K concatenations
  (the same loss within 1e-3), and their time ratio;
* peak accelerator memory of each step (``torch.cuda.max_memory_allocated``; CPU: not measured).

FLOPs counted (LoRA training: forward 2*N*T, backward through frozen weights ~2*N*T for the
activation gradients): ``4 * N_layers_params * tokens + 4 * hidden * vocab * scored positions``;
attention scores are left out (small at these lengths), so the TFLOP/s figure is a lower bound.
The peak is looked up by device name (dense bf16 / fp32 tensor rates) or given by ``--peak-tflops``.

    python bench/gpu_check.py                                   # CUDA: SmolLM2-135M and ~1B Llama shapes
    python bench/gpu_check.py --shapes tiny --device cpu --steps 1   # what the test runs
    python bench/gpu_check.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

SHAPES = {  # LlamaConfig fields; no weights needed
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}
# dense tensor-core peak TFLOP/s (bf16, tf32/fp32) by device-name substring
PEAKS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L40S": (362.0, 183.0),
         "A10": (125.0, 62.5), "4090": (165.0, 82.6)}


def build(shape: str, device: torch.device, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from prefrec.models.lm import apply_lora

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=2048, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, attn_implementation="sdpa")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        model = apply_lora(model, {"r": 8, "alpha": 32, "dropout": 0.0})
        for n, p in model.named_parameters():  # non-zero LoRA B: policy != reference, real gradients
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.02)
    model.config.use_cache = False
    return model.to(device).train()


def layer_params(model) -> int:
    """Parameters of the transformer blocks (what every token passes through)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(p.numel() for n, p in inner.named_parameters() if ".layers." in n)


def make_batch(vocab: int, batch: int, k: int, prompt_len: int, answer_len: int, seed: int):
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    prompts = [ids(prompt_len - (i % 3)) for i in range(batch)]
    answers = [[ids(answer_len - (j % 2)) + [2] for j in range(1 + k)] for _ in range(batch)]
    return prompts, answers


def naive_logps(model, prompts, answers) -> torch.Tensor:
    """(B, 1+K) summed answer log-probs, every prompt + answer concatenation its own row."""
    from prefrec.lm.scoring import _token_logps

    dev = next(model.parameters()).device
    rows = [(p, a) for p, ans in zip(prompts, answers) for a in ans]
    T = max(len(p) + len(a) for p, a in rows)
    ids = torch.zeros((len(rows), T), dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for r, (p, a) in enumerate(rows):
        ids[r, :len(p) + len(a)] = torch.tensor(p + a)
        att[r, :len(p) + len(a)] = 1
    keep = torch.zeros((len(rows), T), dtype=torch.bool)
    for r, (p, a) in enumerate(rows):
        keep[r, len(p) - 1:len(p) + len(a) - 1] = True
    out = model(input_ids=ids.to(dev), attention_mask=att.to(dev), logits_to_keep=keep.to(dev), use_cache=False)
    logits = out.logits if out.logits.dim() == 2 else out.logits[keep.to(dev)]
    tgt = torch.cat([torch.tensor(a) for _, a in rows]).to(dev)
    lp = _token_logps(logits, tgt)
    sums = torch.zeros(len(rows), device=dev).index_add_(
        0, torch.repeat_interleave(torch.arange(len(rows), device=dev), torch.tensor([len(a) for _, a in rows], device=dev)), lp)
    return sums.view(len(prompts), -1)


def sdpo_loss(policy: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    from prefrec.losses import make_loss

    r = policy - ref
    return make_loss("sdpo")(r[:, 0], r[:, 1:]).mean()


def sft_loss(model, prompts, answers) -> tuple[torch.Tensor, int]:
    from prefrec.train.sft import answer_nll, collate_sft

    ex = [(p, a[0]) for p, a in zip(prompts, answers)]
    nll, n, _ = answer_nll(model, collate_sft(ex, 0))
    return nll / n, n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(fn, model, device: torch.device, steps: int) -> dict:
    """Run ``fn() -> (loss, tokens)`` + backward + AdamW step ``steps`` times after one warm-up."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times, loss_v, tokens = [], float("nan"), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cpu0 = time.process_time()
    for i in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        loss, tokens = fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
        loss_v = float(loss.detach())
    out = {"step_s": statistics.median(times), "cpu_s_per_step": (time.process_time() - cpu0) / (steps + 1),
           "tokens": tokens, "loss": loss_v}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def check_shape(shape: str, device: torch.device, steps: int, batch: int, ks: list[int], prompt_len: int,
                answer_len: int, peak: tuple[float, float] | None) -> dict:
    from contextlib import nullcontext

    from prefrec.lm.scoring import packed_candidate_logps

    res: dict = {"shape": shape, "device": str(device)}
    model = build(shape, device)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    n_layer = layer_params(model)
    res["layer_params_M"] = round(n_layer / 1e6, 1)

    def autocast(prec: str):
        if prec == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    # parity: same weights and batch, bf16 mixed vs fp32
    prompts, answers = make_batch(vocab, batch, max(ks), prompt_len, answer_len, seed=1)
    ref = torch.zeros(batch, 1 + max(ks), device=device)
    par = {}
    with torch.no_grad():
        for prec in ("fp32", "bf16"):
            with autocast(prec):
                par[prec] = (float(sdpo_loss(packed_candidate_logps(model, prompts, answers, 0), ref)),
                             float(sft_loss(model, prompts, answers)[0]))
    res["parity"] = {"sdpo_fp32": par["fp32"][0], "sdpo_bf16": par["bf16"][0],
                     "sft_fp32": par["fp32"][1], "sft_bf16": par["bf16"][1],
                     "sdpo_rel_diff": abs(par["bf16"][0] - par["fp32"][0]) / max(abs(par["fp32"][0]), 1e-12),
                     "sft_rel_diff": abs(par["bf16"][1] - par["fp32"][1]) / max(abs(par["fp32"][1]), 1e-12)}

    for prec in ("fp32", "bf16"):
        pk = None if peak is None else peak[0 if prec == "bf16" else 1]

        def rate(r: dict, scored: int) -> None:
            flops = 4 * n_layer * r["tokens"] + 4 * hidden * vocab * scored
            r["tokens_per_s"] = round(r["tokens"] / r["step_s"], 1)
            r["tflops"] = flops / r["step_s"] / 1e12
            if pk:
                r["mfu"] = r["tflops"] / pk

        def sft_fn():
            with autocast(prec):
                loss, _ = sft_loss(model, prompts, answers)
            return loss, sum(len(p) + len(a[0]) for p, a in zip(prompts, answers))

        r = timed_steps(sft_fn, model, device, steps)
        rate(r, sum(len(a[0]) for a in answers))
        res[f"sft_{prec}"] = r
        for k in ks:
            ans_k = [a[:1 + k] for a in answers]
            ref_k = torch.zeros(batch, 1 + k, device=device)
            ans_tokens = sum(len(x) for a in ans_k for x in a)

            def shared_fn():
                with autocast(prec):
                    loss = sdpo_loss(packed_candidate_logps(model, prompts, ans_k, 0), ref_k)
                return loss, sum(len(p) for p in prompts) + ans_tokens

            def naive_fn():
                with autocast(prec):
                    loss = sdpo_loss(naive_logps(model, prompts, ans_k), ref_k)
                return loss, sum(len(p) * (1 + k) for p in prompts) + ans_tokens

            with torch.no_grad(), autocast(prec):  # the two scorers agree before any timing
                a = float(sdpo_loss(packed_candidate_logps(model, prompts, ans_k, 0), ref_k))
                b = float(sdpo_loss(naive_logps(model, prompts, ans_k), ref_k))
            s = timed_steps(shared_fn, model, device, steps)
            n = timed_steps(naive_fn, model, device, steps)
            rate(s, ans_tokens)
            rate(n, ans_tokens)
            res[f"sdpo_k{k}_{prec}"] = {"shared": s, "naive": n, "naive_over_shared": round(n["step_s"] / s["step_s"], 2),
                                         "loss_shared_vs_naive": abs(a - b)}
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--shapes", default=None, help=f"comma list of {sorted(SHAPES)} (default: smollm2-135m,llama-1b "
                                                  "on CUDA, tiny on CPU)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--k", default="3,19", help="S-DPO negatives to time")
    ap.add_argument("--prompt-len", type=int, default=160)
    ap.add_argument("--answer-len", type=int, default=5)
    ap.add_argument("--peak-tflops", default=None, help="BF16,FP32 peak of the device (default: by name)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from prefrec.models.lm import resolve_device

    device = resolve_device(args.device)
    shapes = args.shapes.split(",") if args.shapes else (["smollm2-135m", "llama-1b"] if device.type == "cuda" else ["tiny"])
    peak = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.peak_tflops:
        peak = tuple(float(x) for x in args.peak_tflops.split(","))  # type: ignore[assignment]
    else:
        peak = next((v for k, v in PEAKS.items() if k in name), None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    out = {"device_name": name, "torch": torch.__version__, "peak_tflops_bf16_fp32": peak, "results": []}
    ks = [int(x) for x in args.k.split(",")]
    for shape in shapes:
        t0 = time.perf_counter()
        r = check_shape(shape, device, args.steps, args.batch, ks, args.prompt_len, args.answer_len, peak)
        r["wall_s"] = round(time.perf_counter() - t0, 1)
        out["results"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    for r in out["results"]:
        print(f"\n{r['shape']} on {name}: bf16/fp32 loss rel. diff S-DPO {r['parity']['sdpo_rel_diff']:.2e}, "
              f"SFT {r['parity']['sft_rel_diff']:.2e}")
        for prec in ("fp32", "bf16"):
            s = r[f"sft_{prec}"]
            line = f"  {prec}: SFT {s['step_s'] * 1e3:.1f} ms/step {s['tokens_per_s']:.0f} tok/s {s['tflops']:.3g} TFLOP/s" + (f" ({s['mfu']:.1%} of peak)" if 'mfu' in s else "")
            for k in ks:
                d = r[f"sdpo_k{k}_{prec}"]
                line += f" | S-DPO K={k} {d['shared']['step_s'] * 1e3:.1f} ms (naive {d['naive_over_shared']}x)"
            print(line + ("" if "peak_mem_gib" not in s else f" | peak {s['peak_mem_gib']:.2f} GiB"))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
