"""The speed paths of the CF trainer against the plain versions they replace (values and gradients)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prefrec.cf import evaluate as E
from prefrec.cf import scoring as S
from prefrec.cf.data import UserItems


def test_workspace_dense_gather_equals_autograd():
    g = torch.Generator().manual_seed(0)
    U0, I0 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(30, 5, generator=g, dtype=torch.float64)
    ws = S.Workspace()
    for step in range(3):  # buffer reused across calls; repeated draws accumulate
        neg = torch.randint(0, 30, (6, 40), generator=g)
        w = torch.randn(6, 40, generator=g, dtype=torch.float64)
        outs = []
        for use_ws in (False, True):
            U, I = U0.clone().requires_grad_(), I0.clone().requires_grad_()
            u, i = F.normalize(U, dim=1), F.normalize(I, dim=1)
            s = S.per_row_scores(u, i, neg, "dense", ws if use_ws else None)
            (s * w).sum().backward()
            outs.append((s.detach(), U.grad, I.grad))
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n_items", [640, 1000, 4099])
def test_blocked_topk_equals_topk(n_items):
    g = torch.Generator().manual_seed(n_items)
    x = torch.randn(37, n_items, generator=g)
    x[:, ::7] = -torch.inf  # masked training items
    pad = -(-n_items // 64) * 64
    xp = torch.cat([x, torch.full((37, pad - n_items), -torch.inf)], 1)
    for k in (1, 5, 20):
        got = E._topk_indices(xp, k, 64)
        want = torch.topk(x, k, dim=1, sorted=True).indices
        assert torch.equal(got, want)


def test_evaluate_full_blocked_path_equals_naive(monkeypatch):
    monkeypatch.setattr(E, "_BLOCKED_MIN_ITEMS", 1)
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 1000
    tr = (rng.random((n_users, n_items)) < 0.05)
    te = (rng.random((n_users, n_items)) < 0.02) & ~tr
    te[3] = False  # a user without ground truth counts as zero
    train = UserItems.from_pairs(*np.nonzero(tr), n_users, n_items)
    truth = UserItems.from_pairs(*np.nonzero(te), n_users, n_items)
    U, I = torch.randn(n_users, 8, dtype=torch.float64), torch.randn(n_items, 8, dtype=torch.float64)
    for chunk in (7, 64):
        got = E.evaluate_full(U, I, train, truth, (5, 20, 50), chunk)
        want = E.evaluate_naive(U, I, train, truth, (5, 20, 50))
        for k in want:
            assert got[k] == pytest.approx(want[k], abs=1e-9)


@pytest.mark.parametrize("name,hyper", [
    ("psl", {"tau": 0.05, "activation": "tanh"}), ("psl", {"tau": 0.1, "activation": "atan"}),
    ("psl", {"tau": 0.05, "activation": "relu"}), ("psl", {"tau": 0.1, "activation": "exp"}),
    ("sl", {"tau": 0.2}), ("bsl", {"tau1": 0.5, "tau2": 0.2}),
])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("rows", [9, 150])  # 150 > fused.BLOCK_ROWS and not a multiple: the blocked path
def test_fused_losses_match_autograd(name, hyper, masked, rows):
    from prefrec.cf.fused import fused_loss
    from prefrec.losses import make_loss

    g = torch.Generator().manual_seed(5)
    pos0 = torch.rand(rows, generator=g, dtype=torch.float64) - 0.5  # cos/2-like range, d in [-1, 1]
    neg0 = torch.rand(rows, 40, generator=g, dtype=torch.float64) - 0.5
    if name == "psl" and hyper["activation"] == "relu":
        neg0[0, :5] = pos0[0] - 1.0  # d = -1 exactly: log ReLU(0) slots
    mask = (torch.rand(rows, 40, generator=g) > 0.3) if masked else None
    w = torch.randn(rows, generator=g, dtype=torch.float64)
    out = []
    for fn in (make_loss(name, **hyper), fused_loss(name, **hyper)):
        pos, neg = pos0.clone().requires_grad_(), neg0.clone().requires_grad_()
        v = fn(pos, neg, mask)
        (v * w).sum().backward()
        out.append((v.detach(), pos.grad, neg.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(b, a)


def test_fused_loss_not_used_for_others():
    from prefrec.cf.fused import fused_loss

    assert fused_loss("bpr") is None and fused_loss("sl_paper", tau=0.1) is None
