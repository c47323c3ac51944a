"""Shared-prefix candidate scoring equals naive per-candidate concatenation (values + grads).

The tiny model is initialised with a large ``initializer_range`` so its next-token
distributions are far from uniform; with the default 0.02 every log-prob is ~ -log(V) and a
wrong mask would go unnoticed.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from prefrec.errors import DataError  # noqa: E402
from prefrec.lm.scoring import candidate_logps, naive_candidate_logps  # noqa: E402

CORPUS = ["The user watched Toy Story (1995), Heat (1995), Casino (1995) and Fargo. "
          "Which one next? Answer: Star Wars (1977); Return of the Jedi; Alien: Resurrection"] * 4


def tiny_tokenizer():
    """A 300-token byte-level BPE with BOS prepended (like SmolLM2/Llama), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, tr)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_model(vocab: int, attn: str = "sdpa", seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3,
                      attn_implementation=attn)
    return LlamaForCausalLM(cfg).float().eval()


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


PROMPTS = ["The user watched Toy Story (1995). Answer:",
           "The user watched Heat (1995), Casino (1995) and Fargo and Heat again. Which one next? Answer:",
           "Which?"]
CANDS = [["Heat", "Star Wars (1977)", "Casino", "Alien: Resurrection"],
         ["A", "Toy Story (1995) and a much longer title", "Heat", "Fargo"],
         ["x", "yy", "Return of the Jedi", "zzz zz"]]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _check_parity(model, tok, prompts=PROMPTS, cands=CANDS, chunk=None):
    w = torch.randn(len(prompts), len(cands[0]))
    model.zero_grad()
    fast = candidate_logps(model, tok, prompts, cands, grad=True, chunk=chunk)
    (fast * w).sum().backward()
    g_fast = _grads(model)
    model.zero_grad()
    slow = naive_candidate_logps(model, tok, prompts, cands, grad=True)
    (slow * w).sum().backward()
    g_slow = _grads(model)
    assert fast.shape == (len(prompts), len(cands[0])) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)
    assert g_fast.keys() == g_slow.keys() and g_fast
    for n in g_fast:
        torch.testing.assert_close(g_fast[n], g_slow[n], atol=1e-4, rtol=1e-4, msg=n)
    # the test must be able to fail: scores are far from uniform and differ across candidates
    assert slow.std() > 1.0
    return fast


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_parity_values_and_grads(tok, attn):
    model = tiny_model(len(tok), attn)
    _check_parity(model, tok)


def test_parity_chunked(tok):
    model = tiny_model(len(tok))
    _check_parity(model, tok, chunk=3)   # 4 candidates -> chunks of 3 + 1 (padded, dropped)


def test_parity_lora(tok):
    peft = pytest.importorskip("peft")
    model = tiny_model(len(tok))
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                          "gate_proj", "up_proj", "down_proj"])
    pm = peft.get_peft_model(model, cfg)
    with torch.no_grad():   # B is zero-initialised: make the adapter matter for the check
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    _check_parity(pm, tok)
    # adapters disabled = reference model: still the same path, still parity
    with pm.disable_adapter():
        ref = candidate_logps(pm, tok, PROMPTS, CANDS)
        torch.testing.assert_close(ref, naive_candidate_logps(pm, tok, PROMPTS, CANDS), atol=1e-4, rtol=1e-4)


def test_grad_flag(tok):
    model = tiny_model(len(tok))
    assert not candidate_logps(model, tok, PROMPTS, CANDS).requires_grad
    assert candidate_logps(model, tok, PROMPTS, CANDS, grad=True).requires_grad


def test_candidates_do_not_see_each_other(tok):
    """Permuting (or dropping) the other candidates leaves each candidate's score unchanged."""
    model = tiny_model(len(tok))
    base = candidate_logps(model, tok, PROMPTS, CANDS)
    perm = [3, 1, 0, 2]
    shuffled = candidate_logps(model, tok, PROMPTS, [[c[i] for i in perm] for c in CANDS])
    torch.testing.assert_close(shuffled, base[:, perm], atol=1e-5, rtol=1e-5)
    alone = candidate_logps(model, tok, PROMPTS[:1], [CANDS[0][:1]])
    torch.testing.assert_close(alone[0, 0], base[0, 0], atol=1e-5, rtol=1e-5)


def test_batch_independence(tok):
    """A prompt's scores do not depend on which other prompts share the batch (padding)."""
    model = tiny_model(len(tok))
    base = candidate_logps(model, tok, PROMPTS, CANDS)
    for i in range(len(PROMPTS)):
        one = candidate_logps(model, tok, PROMPTS[i:i + 1], CANDS[i:i + 1])
        torch.testing.assert_close(one[0], base[i], atol=1e-5, rtol=1e-5)


def test_matches_plain_forward(tok):
    """Independent oracle: the log-prob from one unpadded forward over prompt + answer."""
    from prefrec.lm.tokens import encode_answer, encode_prompt

    model = tiny_model(len(tok))
    p, a = encode_prompt(tok, PROMPTS[1]), encode_answer(tok, CANDS[1][1])
    with torch.no_grad():
        logits = model(torch.tensor([p + a])).logits[0].float().log_softmax(-1)
    want = sum(logits[len(p) - 1 + k, t] for k, t in enumerate(a))
    got = candidate_logps(model, tok, PROMPTS[1:2], [CANDS[1]])[0, 1]
    assert abs(float(got) - float(want)) < 1e-4


def test_bad_shapes(tok):
    model = tiny_model(len(tok))
    with pytest.raises(DataError, match="candidate lists have lengths"):
        candidate_logps(model, tok, PROMPTS[:2], [["a", "b"], ["c"]])
    with pytest.raises(DataError, match="prompts but"):
        candidate_logps(model, tok, PROMPTS, CANDS[:1])
    with pytest.raises(DataError, match="tokenizes to nothing"):
        candidate_logps(model, tok, PROMPTS[:1], [[""]])
    assert candidate_logps(model, tok, [], []).shape == (0, 0)
