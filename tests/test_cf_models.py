"""MF and LightGCN: embeddings, normalisation, adjacency from training edges, propagation."""

import numpy as np
import torch
import torch.nn.functional as F

from prefrec.models.lightgcn import LightGCN, normalized_adjacency
from prefrec.models.mf import MF


def test_mf_cosine_and_full_scores():
    m = MF(5, 7, dim=4, norm=True)
    u, i = m.user_item_embeddings()
    torch.testing.assert_close(u.norm(dim=1), torch.ones(5))
    users = torch.tensor([0, 3])
    full = m.full_scores(users)
    assert full.shape == (2, 7)
    want = F.cosine_similarity(m.user.weight[users].unsqueeze(1), m.item.weight.unsqueeze(0), dim=-1)
    torch.testing.assert_close(full, want)
    torch.testing.assert_close(m.score(users, torch.tensor([1, 6])), full[[0, 1], [1, 6]])
    # N(0,1) init (row norms ~ sqrt(d)); xavier for BPR is much smaller
    torch.manual_seed(0)
    big = MF(2000, 10, dim=64, norm=False).user.weight.std().item()
    small = MF(2000, 10, dim=64, norm=False, init="xavier_normal").user.weight.std().item()
    assert 0.95 < big < 1.05 and small < 0.1


def test_adjacency_uses_given_edges_only_and_is_normalised():
    u, i = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])  # duplicate edge collapses
    A = normalized_adjacency(u, i, 3, 2).to_dense()
    du, di = np.array([2, 1, 0]), np.array([1, 2])
    want = np.zeros((5, 5), np.float32)
    for a, b in [(0, 0), (0, 1), (1, 1)]:
        want[a, 3 + b] = want[3 + b, a] = 1 / np.sqrt(du[a] * di[b])
    np.testing.assert_allclose(A.numpy(), want, rtol=1e-6)


def test_lightgcn_propagation_matches_dense():
    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((6, 5)) < 0.4)
    for layers in (0, 1, 2, 3):
        m = LightGCN(6, 5, u, i, dim=3, layers=layers, norm=False)
        A = m.adj.to_dense()
        e = torch.cat([m.user.weight, m.item.weight])
        acc, cur = e.clone(), e
        for _ in range(layers):
            cur = A @ cur
            acc = acc + cur
        acc = acc / (layers + 1)
        U, I = m.user_item_embeddings()
        torch.testing.assert_close(torch.cat([U, I]), acc)
    U, I = m.user_item_embeddings()
    (U.sum() + I.pow(2).sum()).backward()
    assert m.user.weight.grad is not None and torch.isfinite(m.item.weight.grad).all()
