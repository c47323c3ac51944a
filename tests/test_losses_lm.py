"""Preference losses over LM implicit rewards (S-DPO, DPO, and any CF ranking loss).

Rewards here are ``beta * (log pi - log pi_ref)`` already scaled: the losses never see beta.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prefrec.errors import ConfigError
from prefrec.losses import dpo, make_loss, psl, sdpo


def _rewards(b: int = 5, k: int = 3, dtype=torch.float64, scale: float = 1.0):
    g = torch.Generator().manual_seed(1)
    pos = (torch.randn(b, generator=g, dtype=dtype) * scale).requires_grad_()
    neg = (torch.randn(b, k, generator=g, dtype=dtype) * scale).requires_grad_()
    return pos, neg


def test_sdpo_k1_equals_dpo():
    pos, neg = _rewards(k=1)
    torch.testing.assert_close(sdpo(pos, neg), dpo(pos, neg))
    # and equals the textbook form -log sigma(r_w - r_l)
    torch.testing.assert_close(sdpo(pos, neg), -F.logsigmoid(pos - neg[:, 0]))


def test_sdpo_matches_paper_code_form():
    """Peer code: -logsigmoid(-log(sum_k exp(r_k - r_w))); ours uses logsumexp, same value."""
    pos, neg = _rewards(k=4)
    ref = -F.logsigmoid(-torch.log(torch.exp(neg - pos[:, None]).sum(1)))
    torch.testing.assert_close(sdpo(pos, neg), ref)


def test_sdpo_hand_value():
    pos = torch.tensor([0.0], dtype=torch.float64)
    neg = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    expected = math.log1p(math.e + math.e ** 2)  # softplus(log(e + e^2))
    assert sdpo(pos, neg).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", [1, 3, 7, 19])
def test_value_at_init_is_log_one_plus_k(k):
    """policy == reference  =>  every reward is 0  =>  loss = log(1 + K)."""
    logp = torch.randn(4, 1 + k, dtype=torch.float64) * 10 - 20  # any log-probs
    rewards = 1.7 * (logp - logp.clone())
    val = sdpo(rewards[:, 0], rewards[:, 1:])
    torch.testing.assert_close(val, torch.full((4,), math.log(1 + k), dtype=torch.float64))
    assert make_loss("sdpo")(rewards[:, 0], rewards[:, 1:]).mean().item() == pytest.approx(math.log(1 + k))


def test_gradcheck_sdpo_with_margins():
    pos, neg = _rewards(b=3, k=3)
    margin = torch.rand(3, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True], [False, True, True]])
    assert torch.autograd.gradcheck(lambda p, n, m, g: sdpo(p, n, mask, margin=m, gamma=g),
                                    (pos, neg, margin, gamma))


def test_gradcheck_dpo_and_psl_relu():
    pos, neg = _rewards(b=4, k=1)
    assert torch.autograd.gradcheck(dpo, (pos, neg))
    pos, neg = _rewards(b=4, k=3, scale=0.2)  # keep d + 1 > 0 (relu kink is not differentiable)
    assert torch.autograd.gradcheck(lambda p, n: psl(p, n, tau=0.5, activation="relu"), (pos, neg))


def test_sdpo_gradient_is_hard_negative_weighted():
    """dL/dr_k = sigma(g) * softmax_k(r_k): the highest-reward negative gets the largest push."""
    pos = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    sdpo(pos, neg).sum().backward()
    g = torch.logsumexp(neg.detach(), 1)
    torch.testing.assert_close(neg.grad, torch.sigmoid(g)[:, None] * torch.softmax(neg.detach(), 1))
    torch.testing.assert_close(pos.grad, -torch.sigmoid(g))


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_no_overflow_at_large_rewards(big):
    for dtype in (torch.float32, torch.float64):
        pos = torch.tensor([big, 0.0], dtype=dtype, requires_grad=True)
        neg = torch.tensor([[-big, -big, 0.0], [big, big, big]], dtype=dtype, requires_grad=True)
        out = sdpo(pos, neg)
        assert torch.isfinite(out).all()
        out.sum().backward()
        assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
        # row 1: all negatives far above the positive: loss ~ |big| + log 3 when big > 0
        if big > 0:
            assert out[1].item() == pytest.approx(big + math.log(3), rel=1e-6)
        d = dpo(pos, neg[:, :1])
        assert torch.isfinite(d).all()


def test_masks_drop_negatives():
    pos, neg = _rewards(b=2, k=4)
    mask = torch.tensor([[True, False, True, False], [True, True, True, True]])
    full = sdpo(pos, neg, mask)
    torch.testing.assert_close(full[0], sdpo(pos[:1], neg[:1, [0, 2]])[0])
    torch.testing.assert_close(full[1], sdpo(pos[1:], neg[1:])[0])
    # a single valid negative is DPO against that negative
    one = torch.tensor([[False, False, True, False]] * 2)
    torch.testing.assert_close(sdpo(pos, neg, one), dpo(pos, neg[:, 2:3]))
    # masked entries get no gradient, even when huge
    neg2 = neg.detach().clone()
    neg2[0, 1] = 1e6
    neg2.requires_grad_()
    sdpo(pos.detach(), neg2, mask).sum().backward()
    assert neg2.grad[0, 1].item() == 0.0 and torch.isfinite(neg2.grad).all()


def test_dpo_rejects_several_negatives():
    pos, neg = _rewards(k=3)
    with pytest.raises(ValueError, match="sdpo"):
        dpo(pos, neg)


@pytest.mark.parametrize("name,kwargs", [("psl", {"tau": 0.5, "activation": "relu"}),
                                         ("psl", {"tau": 0.2, "activation": "tanh"}),
                                         ("bpr", {}), ("sl", {"tau": 1.0}), ("sl_paper", {"tau": 1.0}),
                                         ("bsl", {"tau1": 1.0, "tau2": 0.5})])
def test_cf_losses_run_over_lm_rewards(name, kwargs):
    """'PSL over LM rewards' is one config line: any make_loss name takes (pos, neg) rewards."""
    logp_pol = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    logp_ref = logp_pol.detach() + 0.1 * torch.randn(4, 4, dtype=torch.float64)
    r = 0.5 * (logp_pol - logp_ref)
    loss = make_loss(name, **kwargs)(r[:, 0], r[:, 1:]).mean()
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logp_pol.grad).all() and logp_pol.grad.abs().sum() > 0


def test_make_loss_errors_name_the_fix():
    with pytest.raises(ConfigError, match="did you mean 'sdpo'"):
        make_loss("sdpoo")
    with pytest.raises(ConfigError, match="must be > 0"):
        make_loss("psl", tau=0.0)
