"""losses.sdpo with NAPO's gamma and RecPO's margins: reductions to S-DPO and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from prefrec.errors import ConfigError
from prefrec.losses import napo_margin, recpo_margin, sdpo
from prefrec.lm.napo import NapoOptions, napo_batch_loss


def _rand(b=4, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, generator=g, dtype=torch.float64), torch.randn(b, k, generator=g, dtype=torch.float64)


def _sdpo_by_hand(pos, neg):
    """The S-DPO repo's literal form: -log sigmoid(-log sum_k exp(r_k - r_w))."""
    temp = torch.exp(neg - pos.unsqueeze(1)).sum(1)
    return -torch.nn.functional.logsigmoid(-torch.log(temp))


def test_gamma_zero_and_no_sharing_is_sdpo():
    pos, neg = _rand()
    torch.testing.assert_close(sdpo(pos, neg, gamma=0.0), _sdpo_by_hand(pos, neg))
    out = napo_batch_loss(pos, neg, NapoOptions(share_negatives=False, gamma0=0.0))
    torch.testing.assert_close(out.per_row, _sdpo_by_hand(pos, neg))


def test_lambda_zero_is_sdpo():
    pos, neg = _rand()
    sp, sn = torch.rand(4, dtype=torch.float64) + 1, torch.rand(4, 3, dtype=torch.float64) + 0.5
    for mode in ("ratio", "log"):
        m = recpo_margin(sp, sn, lam=0.0, mode=mode)
        torch.testing.assert_close(sdpo(pos, neg, margin=m), _sdpo_by_hand(pos, neg))


def test_napo_gamma_hand_computed():
    # -log sigma(A - gamma), A = -log(exp(0.5 - 1) + exp(-1 - 1)), gamma = 0.7
    pos, neg = torch.tensor([1.0]), torch.tensor([[0.5, -1.0]])
    a = -math.log(math.exp(-0.5) + math.exp(-2.0))
    expect = -math.log(1 / (1 + math.exp(-(a - 0.7))))
    assert float(sdpo(pos, neg, gamma=0.7)) == pytest.approx(expect, rel=1e-6)
    # gamma_t = gamma0 * (1 - alpha * (M_b - Mbar)) = 2 * (1 - 0.5 * (3 - 1)) = 0
    assert float(napo_margin(torch.tensor(3.0), 1.0, gamma0=2.0, alpha=0.5)) == pytest.approx(0.0)
    assert float(napo_margin(torch.tensor(0.0), 1.0, gamma0=1.0, alpha=0.3)) == pytest.approx(1.3)


def test_recpo_ratio_margin_hand_computed():
    # s_w = 5/1 (rating 5, step 0), s_j = 3/sqrt(11) (random fill) and 4/sqrt(2) (rating 4, step 1)
    sw = torch.tensor([5.0])
    sn = torch.tensor([[3 / math.sqrt(11), 4 / math.sqrt(2)]])
    m = recpo_margin(sw, sn, lam=0.5, mode="ratio")
    torch.testing.assert_close(m, torch.tensor([[0.5 * 5 * math.sqrt(11) / 3, 0.5 * 5 * math.sqrt(2) / 4]]))
    pos, neg = torch.tensor([0.2]), torch.tensor([[0.1, -0.3]])
    expect = math.log1p(math.exp(-0.1 + float(m[0, 0])) + math.exp(-0.5 + float(m[0, 1])))
    assert float(sdpo(pos, neg, margin=m)) == pytest.approx(expect, rel=1e-6)


def test_recpo_log_margin_hand_computed():
    sw, sn = torch.tensor([4.0]), torch.tensor([[2.0, 4.0]])
    m = recpo_margin(sw, sn, lam=2.0, mode="log")
    torch.testing.assert_close(m, torch.tensor([[2.0 * math.log(3.0), 0.0]]))


def test_recpo_margin_bad_mode():
    with pytest.raises(ConfigError):
        recpo_margin(torch.ones(1), torch.ones(1, 1), mode="diff")


def test_margins_push_loss_up_and_gamma_is_monotone():
    pos, neg = _rand()
    base = sdpo(pos, neg)
    assert (sdpo(pos, neg, gamma=1.0) > base).all()
    assert (sdpo(pos, neg, margin=torch.full_like(neg, 0.5)) > base).all()
    # a negative margin gamma helps, a constant margin inside the softmax equals gamma outside
    torch.testing.assert_close(sdpo(pos, neg, margin=torch.full_like(neg, 0.3)), sdpo(pos, neg, gamma=0.3))


def test_stable_at_large_rewards():
    pos = torch.tensor([0.0, 500.0])
    neg = torch.tensor([[800.0, -800.0], [-500.0, 0.0]])
    out = sdpo(pos, neg, gamma=1.0, margin=torch.ones_like(neg))
    assert torch.isfinite(out).all()
    assert float(out[0]) == pytest.approx(802.0)
