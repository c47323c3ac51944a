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
    for method in ("dense", "bag", "gather", "auto"):
        torch.testing.assert_close(S.per_row_scores(u, i, neg, method), ref, atol=1e-5, rtol=1e-5)


def test_gradients_match_between_paths():
    g = torch.Generator().manual_seed(1)
    U0, I0 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(20, 4, generator=g, dtype=torch.float64)
    neg = torch.randint(0, 20, (5, 9), generator=g)
    w = torch.randn(5, 9, generator=g, dtype=torch.float64)
    grads = []
    for method in ("dense", "bag", "gather", "naive"):
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


def test_bag_path_equals_gather_with_repeats_and_unused_items():
    """Repeated draws accumulate, items nobody drew get a zero gradient, float64 to 1e-12."""
    g = torch.Generator().manual_seed(3)
    u0, i0 = torch.randn(9, 6, generator=g, dtype=torch.float64), torch.randn(300, 6, generator=g, dtype=torch.float64)
    neg = torch.randint(0, 40, (9, 70), generator=g)  # items 40..299 never drawn, many repeats
    w = torch.randn(9, 70, generator=g, dtype=torch.float64)
    outs = []
    for method in ("gather", "bag"):
        u, i = u0.clone().requires_grad_(), i0.clone().requires_grad_()
        s = S.per_row_scores(u, i, neg, method)
        (s * w).sum().backward()
        outs.append((s.detach(), u.grad, i.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    assert outs[1][2][40:].abs().max() == 0


def test_auto_rule_follows_the_measured_crossover():
    assert S.choose_method(1200, 1000) == "dense"  # small catalogue: the (B, |I|) matmuls are cheap
    assert S.choose_method(40988, 1000) == "bag"   # Gowalla at the paper's 1000 negatives
    assert S.choose_method(40988, 100) == "bag"


def test_normalize_rows_equals_f_normalize_values_and_gradients():
    from prefrec.cf.normalize import normalize_rows

    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(50, 7, generator=g, dtype=torch.float64)
    x0[3] = 0.0  # clamped row (norm below eps)
    x0[4] *= 1e-14
    w = torch.randn(50, 7, generator=g, dtype=torch.float64)
    outs = []
    for fn in (lambda x: F.normalize(x, dim=1), normalize_rows):
        x = x0.clone().requires_grad_()
        y = fn(x)
        (y * w).sum().backward()
        outs.append((y.detach(), x.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
