"""One tokenization convention for every LM stage (SFT, scoring, preference, generation).

A prompt ends with a cue such as ``Answer:``; the answer is ``" " + title`` followed by EOS.
Prompt and answer are tokenized **separately** and concatenated, so the answer tokens are
identical whether the answer is scored alone after its prompt (shared-prefix fast path) or
concatenated naively, and SFT, S-DPO rewards and ranking all score the same token ids.
"""

from __future__ import annotations

from prefrec.errors import DataError


def prepare_tokenizer(tok, padding_side: str = "right"):
    """Make padding explicit: pad = EOS when the tokenizer has none (pad positions are always
    masked out of attention and labels, so reusing EOS cannot leak into the loss)."""
    if tok.eos_token_id is None:
        raise DataError("the tokenizer has no EOS token", where=getattr(tok, "name_or_path", "tokenizer"),
                        fix="use a causal LM tokenizer with an eos_token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def answer_text(title: str) -> str:
    """The text the model should produce for an item: a leading space, then the title."""
    return " " + title


def encode_prompt(tok, prompt: str) -> list[int]:
    """Prompt ids with the tokenizer's own special prefix (e.g. BOS) if it adds one."""
    return list(tok(prompt, add_special_tokens=True)["input_ids"])


def encode_answer(tok, title: str, eos: bool = True) -> list[int]:
    """Answer ids: ``" " + title`` without special tokens, then EOS. Empty titles are an error."""
    ids = list(tok(answer_text(title), add_special_tokens=False)["input_ids"])
    if not title.strip() or not ids:
        raise DataError(f"item title {title!r} tokenizes to nothing", where="candidates",
                        fix="give every item a non-empty title")
    return ids + ([tok.eos_token_id] if eos else [])
