"""Seconds per training example: SFT token cross-entropy vs the listwise objective, LoRA vs full
fine-tuning vs top-N blocks only (prefrec.lm.listwise). One thread; ratios against SFT+LoRA
measured in the same run.

    PYTHONPATH=src OMP_NUM_THREADS=1 python3 bench/lm_listwise_step.py --model smollm2-135m --n 8 --batch 4
"""

from __future__ import annotations

import argparse
import copy
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--n", type=int, default=8, help="timed examples per variant (after one warm-up batch)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--top", type=int, default=8, help="blocks trained in the top-N variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from prefrec.lm.listwise import encode_listwise, freeze_below, listwise_batch_loss
    from prefrec.lm.prompts import lm_samples
    from prefrec.lm.tokens import prepare_tokenizer
    from prefrec.models.lm import apply_lora, cpu_fast_math, load_lm
    from prefrec.train.sft import answer_nll, collate_sft, encode_sft_samples

    cpu_fast_math()
    base, tok = load_lm(args.model)
    prepare_tokenizer(tok)
    samples = lm_samples(args.dataset, "train", limit=args.n + args.batch, seed=0)
    sft_ex = encode_sft_samples(tok, samples, "bench")
    lw_ex = encode_listwise(tok, samples, "bench")
    pad = tok.pad_token_id

    def variant(kind: str):
        m = copy.deepcopy(base)
        if kind == "lora":
            m = apply_lora(m, {"r": 8, "alpha": 32, "dropout": 0.05,
                               "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"]})
        elif kind == "full":
            for p in m.parameters():
                p.requires_grad_(True)
        else:
            freeze_below(m, args.top)
        m.train()
        return m

    def run(m, objective: str) -> float:
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
        t = 0.0
        for s in range(0, args.n + args.batch, args.batch):
            t0 = time.perf_counter()
            if objective == "ce":
                nll, n, _ = answer_nll(m, collate_sft(sft_ex[s:s + args.batch], pad))
                (nll / n).backward()
            else:
                loss, _ = listwise_batch_loss(m, lw_ex[s:s + args.batch], pad, ce_weight=0.5)
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if s >= args.batch:  # first batch = warm-up
                t += time.perf_counter() - t0
        return t / args.n

    rows = [("SFT token CE, LoRA r=8", "lora", "ce"), ("listwise, LoRA r=8", "lora", "lw"),
            ("listwise, full fine-tuning", "full", "lw"), (f"listwise, top {args.top} blocks", "top", "lw")]
    ref = None
    for name, kind, obj in rows:
        sec = run(variant(kind), obj)
        ref = ref or sec
        print(f"{name:32s} {sec:6.2f} s/example  x{ref / sec:4.2f} examples/s vs SFT+LoRA", flush=True)


if __name__ == "__main__":
    main()
