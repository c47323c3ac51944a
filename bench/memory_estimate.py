"""Computed (not measured) GPU memory per process of an S-DPO run with LoRA, for docs/gpus.md.

Not a test. Every process holds the whole model (data parallelism; prefrec's reference comes
from the on-disk cache, so there is no second model copy). Terms, per GPU:

* weights: bf16 = 2 bytes/param; 4-bit NF4 with double quantization ~0.516 bytes/param for the
  block weights, embeddings and LM head kept in bf16;
* LoRA (r on the seven projections): fp32 weights + gradients + two Adam moments = 16 bytes/param;
* activations kept for backward, per token and layer, bf16: the inputs of the seven projections
  and the norms/residuals (~8 hidden-size vectors) plus the MLP's gate/up/activation/down inputs
  (~4 intermediate-size vectors); with gradient checkpointing only the layer input (1 vector)
  plus one layer's full set during recomputation;
* scored logits (fp32, only at answer positions): (1+K) x answer tokens x vocab x 4 bytes x 2
  (logits and their log-softmax);
* 1.5 GiB of CUDA context, allocator slack and kernels' workspaces.

Tokens per example: shared prefix = prompt + (1+K) x answer; naive = (1+K) x (prompt + answer).

    python bench/memory_estimate.py                 # LLaMA2-7B, the S-DPO paper's setting
    python bench/memory_estimate.py --batch 2 --prompt 300
"""

from __future__ import annotations

import argparse

SHAPES = {"llama2-7b": dict(params=6.74e9, layers=32, hidden=4096, inter=11008, vocab=32000),
          "smollm2-135m": dict(params=1.35e8, layers=30, hidden=576, inter=1536, vocab=49152),
          "llama-1b": dict(params=1.24e9, layers=16, hidden=2048, inter=8192, vocab=128256)}
GIB = 2**30


def lora_params(s: dict, r: int) -> float:
    h, i = s["hidden"], s["inter"]
    return s["layers"] * r * (4 * 2 * h + 3 * (h + i))  # q,k,v,o (h x h; GQA ignored) + gate, up, down


def estimate(shape: str, k: int, *, weights: str = "bf16", batch: int = 4, prompt: int = 200, answer: int = 6,
             r: int = 8, checkpointing: bool = False, naive: bool = False) -> dict[str, float]:
    s = SHAPES[shape]
    h, i, L, V = s["hidden"], s["inter"], s["layers"], s["vocab"]
    emb = 2 * V * h  # embeddings + LM head (untied in LLaMA2)
    if weights == "bf16":
        w = 2 * s["params"]
    else:
        w = 0.516 * (s["params"] - emb) + 2 * emb
    lora = 16 * lora_params(s, r)
    tokens = (1 + k) * (prompt + answer) if naive else prompt + (1 + k) * answer
    per_tok_layer = 2 * ((1 if checkpointing else 8) * h + (0 if checkpointing else 4) * i)
    act = batch * tokens * L * per_tok_layer
    if checkpointing:
        act += batch * tokens * 2 * (8 * h + 4 * i)  # one layer recomputed at a time
    logits = batch * (1 + k) * answer * V * 4 * 2
    total = w + lora + act + logits + 1.5 * GIB
    return {"weights": w / GIB, "lora+adam": lora / GIB, "activations": act / GIB, "logits": logits / GIB,
            "total": total / GIB, "tokens_per_example": tokens}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=4, help="examples per GPU per micro-batch")
    ap.add_argument("--prompt", type=int, default=200, help="prompt tokens")
    ap.add_argument("--answer", type=int, default=6, help="answer tokens incl. EOS")
    args = ap.parse_args(argv)
    rows = []
    print(f"| {args.shape}, batch {args.batch}/GPU, prompt {args.prompt}, answer {args.answer} | K | weights | "
          "LoRA+Adam | activations | logits | total GiB/GPU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for weights in ("bf16", "4bit"):
        for ckpt in (False, True):
            for naive in (False, True):
                for k in (3, 19):
                    e = estimate(args.shape, k, weights=weights, batch=args.batch, prompt=args.prompt,
                                 answer=args.answer, checkpointing=ckpt, naive=naive)
                    label = f"{weights}{', grad. checkpointing' if ckpt else ''}, {'naive concatenations' if naive else 'shared prefix'}"
                    print(f"| {label} | {k} | {e['weights']:.1f} | {e['lora+adam']:.2f} | {e['activations']:.1f} | "
                          f"{e['logits']:.2f} | **{e['total']:.1f}** |")
                    rows.append({"weights": weights, "checkpointing": ckpt, "naive": naive, "k": k, **e})
    return rows


if __name__ == "__main__":
    main()
