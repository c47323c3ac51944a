"""Listwise objective (prefrec.losses.listwise_softmax, prefrec.lm.listwise): the loss against its
formula, the packed training loss against naive per-candidate scoring, top-N freezing, and the
SFT hook (objective: listwise) training a tiny model without errors."""

from __future__ import annotations

import math

import pytest
import torch

from prefrec.errors import ConfigError
from prefrec.losses import listwise_softmax, softmax_loss
from test_sft import _samples as sft_samples  # tiny prompts with 6 candidates of different lengths


def test_listwise_softmax_matches_formula():
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 20
    lens = torch.randint(1, 6, (3, 5), generator=g).double()
    t = torch.tensor([0, 4, 2])
    for lengths in (None, lens):
        for tau in (1.0, 0.5):
            got = listwise_softmax(lp, t, lengths, tau=tau)
            for b in range(3):
                s = [(lp[b, c] / (1 if lengths is None else lengths[b, c])).item() / tau for c in range(5)]
                want = -(s[t[b]] - math.log(sum(math.exp(x) for x in s)))
                assert got[b].item() == pytest.approx(want, rel=1e-12)
    # the same value as the sampled softmax with the positive in the denominator
    pos = lp.gather(1, t.unsqueeze(1)).squeeze(1)
    neg = torch.stack([torch.cat([lp[b, :t[b]], lp[b, t[b] + 1:]]) for b in range(3)])
    assert torch.allclose(listwise_softmax(lp, t, tau=0.5), softmax_loss(pos, neg, tau=0.5, include_positive=True))


def test_listwise_softmax_bad_input():
    with pytest.raises(ValueError):
        listwise_softmax(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ConfigError):
        listwise_softmax(torch.zeros(2, 3), torch.zeros(2), tau=0.0)


@pytest.fixture(scope="module")
def tiny():
    from prefrec.models.lm import tiny_lm

    torch.set_num_threads(1)
    return tiny_lm(seed=0, initializer_range=0.3)


@pytest.mark.parametrize("length_norm", [False, True])
def test_batch_loss_matches_naive_scoring(tiny, length_norm):
    """Packed shared-prefix loss + gradients == the same loss from naive per-candidate scoring."""
    from prefrec.lm.listwise import encode_listwise, listwise_batch_loss
    from prefrec.lm.scoring import naive_candidate_logps
    from prefrec.lm.tokens import encode_answer

    model, tok = tiny
    model.eval()
    s = sft_samples(3, 1)
    ex = encode_listwise(tok, s, "t")
    loss, st = listwise_batch_loss(model, ex, tok.pad_token_id, length_norm=length_norm, tau=0.7, ce_weight=0.3)
    g1 = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    lp = naive_candidate_logps(model, tok, [x.prompt for x in s], [x.candidates for x in s], grad=True)
    lens = torch.tensor([[len(encode_answer(tok, c)) for c in x.candidates] for x in s], dtype=lp.dtype)
    t = torch.tensor([x.target_index for x in s])
    want = listwise_softmax(lp, t, lens if length_norm else None, tau=0.7).sum() \
        + 0.3 * (-lp.gather(1, t.unsqueeze(1)).squeeze(1) / lens.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
    g2 = torch.autograd.grad(want, [p for p in model.parameters()], allow_unused=True)
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    for a, b in zip(g1, g2):
        if a is not None:
            assert (a - b).norm() <= 1e-3 * b.norm() + 1e-8  # float32 round-off of two summation orders
    assert 0.0 <= st["hit@1"] <= 1.0


def test_freeze_below(tiny):
    from prefrec.lm.listwise import freeze_below
    from prefrec.models.lm import tiny_lm

    model, tok = tiny_lm(tiny[1], seed=0)
    n_blocks = len(model.model.layers)
    names = freeze_below(model, 1)
    assert names and all(f"layers.{n_blocks - 1}." in n or n.startswith("model.norm") for n in names)
    with pytest.raises(ConfigError):
        freeze_below(model, n_blocks + 1)


def test_sft_listwise_objective_trains(tiny, tmp_path):
    from prefrec.models.lm import tiny_lm
    from prefrec.train.sft import SFTConfig, train_sft

    model, tok = tiny_lm(tiny[1], seed=0, initializer_range=0.3)
    cfg = SFTConfig(output_dir=str(tmp_path / "lw"), model="tiny", max_steps=6, per_device_train_batch_size=4,
                    learning_rate=1e-3, warmup_ratio=0.0, plots=False, objective="listwise",
                    listwise_ce_weight=0.5, use_peft=False, train_top_layers=1, eval_limit=0, save_final_model=False)
    s = sft_samples(8, 1)
    res = train_sft(cfg, model=model, tokenizer=tok, train_samples=s, eval_samples=[])
    assert res.steps == 6 and math.isfinite(res.final_metrics["loss"])
    # train_lm_head: the (untied) head moves, the input embeddings and lower blocks do not
    model, tok = tiny_lm(tiny[1], seed=0, initializer_range=0.3)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    low0 = model.model.layers[0].mlp.up_proj.weight.detach().clone()
    train_sft(cfg.model_copy(update={"output_dir": str(tmp_path / "head"), "train_lm_head": True}), model=model,
              tokenizer=tok, train_samples=s, eval_samples=[])
    assert torch.equal(model.get_input_embeddings().weight, emb0)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, low0)
    assert not torch.equal(model.get_output_embeddings().weight, emb0)
    with pytest.raises(ConfigError):
        train_sft(SFTConfig(output_dir=str(tmp_path / "bad"), model="tiny", max_steps=1, train_top_layers=1,
                            use_peft=True, eval_limit=0, plots=False),
                  model=tiny_lm(tiny[1], seed=0)[0], tokenizer=tok, train_samples=s, eval_samples=[])


def test_untied_head_trains_and_round_trips(tiny, tmp_path):
    """train_lm_head: the head gets its own weights (embeddings untouched), and the saved model
    loads back untied with the same logits."""
    from prefrec.lm.listwise import freeze_below
    from prefrec.models.lm import load_trained_lm, save_trained_lm, tiny_lm

    model, tok = tiny_lm(tiny[1], seed=0, initializer_range=0.3)
    emb0 = model.get_input_embeddings().weight.detach().clone()
    names = freeze_below(model, 1, head=True)
    assert "lm_head.weight" in names
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    with torch.no_grad():
        model.get_output_embeddings().weight.add_(0.5)
    assert torch.equal(model.get_input_embeddings().weight, emb0)
    save_trained_lm(model, tok, tmp_path / "m", base="tiny-full", lora=None)
    back, _ = load_trained_lm(tmp_path / "m")
    ids = torch.tensor([[1, 5, 9, 7]])
    model.eval()
    assert torch.allclose(back(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    assert not torch.equal(back.get_output_embeddings().weight, back.get_input_embeddings().weight)
