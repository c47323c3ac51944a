"""MF and LightGCN: embeddings, normalisation, adjacency from training edges, propagation."""

import numpy as np
import pytest
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


def _xsimgcl(**kw):
    from prefrec.models.xsimgcl import XSimGCL

    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((6, 5)) < 0.5)
    return XSimGCL(6, 5, u, i, dim=4, norm=False, **kw)


def test_xsimgcl_eval_propagation_is_mean_of_layers_without_ego():
    m = _xsimgcl(layers=3, cl_layer=2).eval()
    A = m.adj.to_dense()
    e = torch.cat([m.user.weight, m.item.weight])
    layers = [A @ e]
    for _ in range(2):
        layers.append(A @ layers[-1])
    U, I = m.user_item_embeddings()
    torch.testing.assert_close(torch.cat([U, I]), sum(layers) / 3)
    U2, I2 = m.user_item_embeddings()  # no noise at evaluation: deterministic
    torch.testing.assert_close(U, U2)


def test_xsimgcl_noise_has_norm_eps_and_keeps_the_sign():
    """One layer: the perturbation is sign(e) * normalize(noise) * eps, row norm exactly eps."""
    for noise in ("gaussian", "uniform"):
        m = _xsimgcl(layers=1, eps=0.3, noise=noise).train()
        clean = m.adj.to_dense() @ torch.cat([m.user.weight, m.item.weight])
        torch.manual_seed(1)
        final, view = m.layer_views(perturb=True)
        delta = (final - clean).detach()
        rows = clean.abs().sum(1) > 0  # isolated nodes: sign(0) = 0, no noise
        torch.testing.assert_close(delta[rows].norm(dim=1), torch.full((int(rows.sum()),), 0.3))
        torch.testing.assert_close(view, final)  # cl_layer 1 of 1
        if noise == "uniform":  # U(0, 1) noise stays in the embedding's orthant
            assert (delta * torch.sign(clean) >= 0).all()


def test_xsimgcl_contrastive_loss_matches_naive_infonce():
    m = _xsimgcl(layers=2, cl_layer=1, cl_weight=0.5, cl_tau=0.2).train()
    torch.manual_seed(0)
    m.user_item_embeddings()
    final, view = (t.detach().clone() for t in m._views)
    users, pos = torch.tensor([0, 2, 2, 5]), torch.tensor([1, 1, 3, 4])

    def naive(a, b):
        total = 0.0
        for k in range(len(a)):
            sims = [F.cosine_similarity(a[k], b[j], dim=0) / 0.2 for j in range(len(b))]
            total += -(sims[k] - torch.logsumexp(torch.stack(sims), 0))
        return total / len(a)

    want = 0.5 * (naive(final[users], view[users]) + naive(final[pos + 6], view[pos + 6]))
    got = m.auxiliary_loss(users, pos)
    torch.testing.assert_close(got, want)
    got.backward()
    assert m.user.weight.grad is not None and torch.isfinite(m.item.weight.grad).all()
    with pytest.raises(RuntimeError, match="training-mode"):
        m.auxiliary_loss(users, pos)  # the views are used once


def test_xsimgcl_bad_settings():
    from prefrec.errors import ConfigError

    with pytest.raises(ConfigError, match="cl_layer"):
        _xsimgcl(layers=2, cl_layer=3)
    with pytest.raises(ConfigError, match="at least one layer"):
        _xsimgcl(layers=0)
