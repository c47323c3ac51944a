"""NAPO building blocks on synthetic tensors: sharing, margin, running mean, batch loss."""

from __future__ import annotations

import math

import pytest
import torch

from prefrec.errors import ConfigError
from prefrec.losses import sdpo
from prefrec.lm.napo import (NapoOptions, RunningMean, batch_confidence, napo_batch_loss, num_shared,
                             share_negatives, validate_sharing)


def _batch(b: int = 4, k: int = 3, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    neg = torch.randn(b, k, generator=g, dtype=torch.float64)
    scores = torch.randn(b, k, generator=g, dtype=torch.float64)
    states = torch.randn(b, d, generator=g, dtype=torch.float64)
    ids = torch.arange(100, 100 + b)
    return neg, scores, states, ids


def test_num_shared_rounds_down_like_the_authors():
    assert num_shared(0.7, 16) == 10  # napo.sh: 4 GPUs x 4 -> 3 + 30 = 33 negatives
    assert num_shared(1.0, 4) == 3
    assert num_shared(0.3, 3) == 0
    assert num_shared(0.5, 1) == 0


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), "0.5"])
def test_bad_share_ratio_is_a_config_error(ratio):
    with pytest.raises(ConfigError, match="share_ratio"):
        validate_sharing(ratio)
    neg, scores, states, ids = _batch()
    with pytest.raises(ConfigError):
        share_negatives(neg, scores, states, ids, ratio)


def test_global_batch_of_one_with_sharing_is_a_config_error_at_startup():
    with pytest.raises(ConfigError, match="at least 2 examples"):
        NapoOptions(share_negatives=True).validate(global_batch_size=1)
    NapoOptions(share_negatives=False).validate(global_batch_size=1)  # fine without sharing
    NapoOptions(share_negatives=True).validate(global_batch_size=2)


def test_runtime_batch_of_one_returns_own_negatives_only():
    """A short last batch of one example must not crash: documented k = 0 behaviour."""
    neg, scores, states, ids = _batch(b=1)
    out = share_negatives(neg, scores, states, ids, 0.7)
    assert out.k == 0 and out.values is neg and out.mask.all() and out.values.shape == (1, 3)


def test_sharing_appends_the_most_similar_other_examples_by_dot_product():
    k_neg = 2
    neg = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    scores = neg * 10
    # example 0 is most similar to 2 (dot 0.9), then 1 (0.5), then 3 (-1)
    states = torch.tensor([[1.0, 0.0], [0.5, 0.1], [0.9, 0.0], [-1.0, 0.0]])
    ids = torch.tensor([0, 1, 2, 3])
    out = share_negatives(neg, scores, states, ids, share_ratio=2 / 3)  # k = int(2/3 * 3) = 2
    assert out.k == 2
    assert out.values.shape == (4, k_neg + 2 * k_neg)
    torch.testing.assert_close(out.values[0], torch.tensor([1.0, 2.0, 5.0, 6.0, 3.0, 4.0]))
    torch.testing.assert_close(out.scores[0], 10 * torch.tensor([1.0, 2.0, 5.0, 6.0, 3.0, 4.0]))
    # example 3: dots with 0,1,2 = -1, -0.5, -0.9 -> 1 then 2
    torch.testing.assert_close(out.values[3], torch.tensor([7.0, 8.0, 3.0, 4.0, 5.0, 6.0]))
    assert out.mask.all()


def test_shared_negatives_are_the_other_examples_values_not_rescored():
    """Quirk q3 by design: a shared entry is log pi(y | x_j) from example j's prompt."""
    neg, scores, states, ids = _batch(b=5, k=3)
    out = share_negatives(neg, scores, states, ids, 1.0)
    sim = states @ states.T
    for i in range(5):
        order = [j for j in torch.argsort(sim[i], descending=True).tolist() if j != i]
        expect = torch.cat([neg[i]] + [neg[j] for j in order])
        torch.testing.assert_close(out.values[i], expect)


def test_same_id_is_never_shared_and_missing_neighbours_are_masked():
    neg, scores, states, ids = _batch(b=4)
    ids = torch.tensor([7, 7, 8, 9])  # a duplicate (e.g. distributed sampler padding)
    out = share_negatives(neg, scores, states, ids, 1.0)  # k = 3 but only 2 other ids
    assert out.k == 3
    assert out.mask[0, :9].all() and not out.mask[0, 9:].any()
    shared0 = out.values[0, 3:9].reshape(2, 3)
    for row in shared0:
        assert not torch.equal(row, neg[1])  # the duplicate id is excluded
    loss = sdpo(torch.zeros(4, dtype=neg.dtype), out.values, out.mask)
    assert torch.isfinite(loss).all()


def test_input_mask_propagates_to_shared_slots():
    neg, scores, states, ids = _batch(b=3, k=2)
    mask = torch.tensor([[True, False], [True, True], [True, True]])
    out = share_negatives(neg, scores, states, ids, 1.0, mask=mask)
    for i in (1, 2):
        pos = [j for j in torch.argsort((states @ states.T)[i], descending=True).tolist() if j != i].index(0)
        assert out.mask[i, 2 + 2 * pos].item() and not out.mask[i, 2 + 2 * pos + 1].item()


@pytest.mark.parametrize("detach", [True, False])
def test_gradient_flow_through_own_and_shared_negatives(detach):
    neg, scores, states, ids = _batch(b=3, k=2)
    neg = neg.clone().requires_grad_(True)
    out = share_negatives(neg, scores, states, ids, 1.0, detach_shared=detach)
    # loss of example 0 only: its own negatives always get gradient; others only if not detached
    sdpo(torch.zeros(1, dtype=neg.dtype), out.values[:1], out.mask[:1]).sum().backward()
    assert (neg.grad[0] != 0).all()
    if detach:
        assert (neg.grad[1:] == 0).all()
    else:
        assert (neg.grad[1:] != 0).all()


def test_running_mean_updates_before_use_and_round_trips():
    rm = RunningMean(momentum=0.9)
    assert rm.update(2.0) == pytest.approx(0.2)
    assert rm.update(torch.tensor(1.0)) == pytest.approx(0.9 * 0.2 + 0.1)
    rm2 = RunningMean(0.5)
    rm2.load_state_dict(rm.state_dict())
    assert rm2.value == rm.value and rm2.momentum == 0.9 and rm2.steps == 2
    with pytest.raises(ConfigError, match="momentum"):
        RunningMean(1.0)


def test_batch_confidence_ignores_masked_entries():
    s = torch.tensor([[1.0, 100.0], [3.0, 5.0]])
    m = torch.tensor([[True, False], [True, True]])
    assert float(batch_confidence(s, m)) == pytest.approx(3.0)


def test_napo_without_sharing_or_margin_is_reference_free_sdpo():
    pos = torch.randn(4, dtype=torch.float64)
    neg, scores, states, ids = _batch()
    opts = NapoOptions(share_negatives=False, gamma0=0.0, beta=0.5)
    out = napo_batch_loss(pos, neg, opts)
    torch.testing.assert_close(out.per_row, sdpo(0.5 * pos, 0.5 * neg))


def test_napo_with_reference_uses_implicit_rewards():
    pos, ref_pos = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    neg, scores, states, ids = _batch()
    ref_neg = torch.randn_like(neg)
    opts = NapoOptions(share_negatives=False, gamma0=0.0, use_reference=True, beta=2.0)
    out = napo_batch_loss(pos, neg, opts, ref_pos=ref_pos, ref_neg=ref_neg)
    torch.testing.assert_close(out.per_row, sdpo(2 * (pos - ref_pos), 2 * (neg - ref_neg)))
    with pytest.raises(ConfigError, match="reference"):
        napo_batch_loss(pos, neg, opts)


def test_napo_margin_hand_computed():
    """K=1, no sharing: loss = softplus(r_l - r_w + gamma_t), gamma_t after the Mbar update."""
    pos = torch.tensor([1.0, 0.0], dtype=torch.float64)
    neg = torch.tensor([[0.0], [0.5]], dtype=torch.float64)
    scores = torch.tensor([[2.0], [4.0]], dtype=torch.float64)  # M_b = 3
    rm = RunningMean(0.9)
    opts = NapoOptions(share_negatives=False, gamma0=1.0, alpha=0.3)
    out = napo_batch_loss(pos, neg, opts, neg_scores=scores, running_mean=rm)
    mbar = 0.1 * 3.0  # updated BEFORE the margin
    gamma = 1.0 * (1 - 0.3 * (3.0 - mbar))
    assert out.metrics["napo/gamma"] == pytest.approx(gamma)
    assert out.metrics["napo/M_bar"] == pytest.approx(mbar)
    expect = torch.tensor([math.log1p(math.exp(-1.0 + gamma)), math.log1p(math.exp(0.5 + gamma))],
                          dtype=torch.float64)
    torch.testing.assert_close(out.per_row, expect)


def test_fixed_margin_when_alpha_zero_needs_no_scores():
    pos = torch.zeros(2)
    neg = torch.zeros(2, 3)
    out = napo_batch_loss(pos, neg, NapoOptions(share_negatives=False, gamma0=1.0, alpha=0.0))
    torch.testing.assert_close(out.per_row, torch.full((2,), math.log1p(math.exp(math.log(3) + 1.0))))


def test_missing_inputs_are_config_errors():
    pos = torch.zeros(2)
    neg = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="confidence scores"):
        napo_batch_loss(pos, neg, NapoOptions(share_negatives=False))
    with pytest.raises(ConfigError, match="user states"):
        napo_batch_loss(pos, neg, NapoOptions(gamma0=0.0))


def test_full_napo_batch_loss_matches_manual_composition():
    pos = torch.randn(4, dtype=torch.float64, requires_grad=True)
    neg, scores, states, ids = _batch()
    neg = neg.clone().requires_grad_(True)
    rm = RunningMean(0.9)
    opts = NapoOptions(share_ratio=0.7)  # k = int(0.7 * 3) = 2
    out = napo_batch_loss(pos, neg, opts, neg_scores=scores, user_states=states, example_ids=ids,
                          running_mean=rm)
    sh = share_negatives(neg, scores, states, ids, 0.7)
    m_b = float(sh.scores.mean())
    gamma = 1 - 0.3 * (m_b - 0.1 * m_b)
    torch.testing.assert_close(out.per_row, sdpo(pos, sh.values, sh.mask, gamma=gamma))
    assert out.metrics["napo/negatives"] == 3 + 2 * 3
    out.loss.backward()
    assert pos.grad is not None and neg.grad is not None and (neg.grad != 0).all()
    assert set(out.metrics) >= {"rewards/chosen", "rewards/margins", "rewards/accuracies", "napo/gamma"}


def test_sharing_with_reference_shares_rewards():
    """Shared negatives carry their own example's reference term: beta*(logp_j - ref_j)."""
    pos = torch.randn(3, dtype=torch.float64)
    neg, scores, states, ids = _batch(b=3)
    ref_pos, ref_neg = torch.randn(3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    opts = NapoOptions(share_ratio=1.0, gamma0=0.0, use_reference=True)
    out = napo_batch_loss(pos, neg, opts, ref_pos=ref_pos, ref_neg=ref_neg, user_states=states, example_ids=ids)
    sh = share_negatives(neg - ref_neg, None, states, ids, 1.0)
    torch.testing.assert_close(out.per_row, sdpo(pos - ref_pos, sh.values, sh.mask))
