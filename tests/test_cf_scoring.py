"""Fast scoring paths vs the slow obvious versions (parity, values and gradients)."""

import torch
import torch.nn.functional as F

from prefrec.cf import scoring as S


def test_per_row_paths_agree_with_naive_cosine():
    g = torch.Generator().manual_seed(0)
    U, I = torch.randn(6, 8, generator=g), torch.randn(50, 8, generator=g)
    neg = torch.randint(0, 50, (6, 30), generator=g)
    u, i = F.normalize(U, dim=1), F.normalize(I, dim=1)
    ref = S.naive_cosine_scores(U, I, neg)
    for method in ("dense", "gather", "auto"):
        torch.testing.assert_close(S.per_row_scores(u, i, neg, method), ref, atol=1e-5, rtol=1e-5)


def test_gradients_match_between_paths():
    g = torch.Generator().manual_seed(1)
    U0, I0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(20, 4, generator=g, dtype=torch.float64)
    neg = torch.randint(0, 20, (5, 9), generator=g)
    w = torch.randn(5, 9, generator=g, dtype=torch.float64)
    grads = []
    for method in ("dense", "gather", "naive"):
        U, I = U0.clone().requires_grad_(), I0.clone().requires_grad_()
        if method == "naive":
            s = S.naive_cosine_scores(U, I, neg)
        else:
            s = S.per_row_scores(F.normalize(U, dim=1), F.normalize(I, dim=1), neg, method)
        (s * w).sum().backward()
        grads.append((U.grad, I.grad))
    for gu, gi in grads[1:]:
        torch.testing.assert_close(gu, grads[0][0])
        torch.testing.assert_close(gi, grads[0][1])


def test_shared_equals_per_row_with_expanded_set():
    g = torch.Generator().manual_seed(2)
    u, i = torch.randn(7, 8, generator=g), torch.randn(40, 8, generator=g)
    shared = torch.randperm(40, generator=g)[:12]
    torch.testing.assert_close(S.shared_scores(u, i, shared), S.gather_bmm_scores(u, i, shared.expand(7, 12)))
