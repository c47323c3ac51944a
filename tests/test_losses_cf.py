"""CF losses: hand-computed values, identities between losses, gradients, extreme inputs."""

import math

import pytest
import torch

from prefrec import losses as L
from prefrec.errors import ConfigError


def t(x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype)


def test_bpr_hand_value():
    got = L.bpr(t([0.0]), t([[1.0, -1.0]]))
    want = (math.log1p(math.e) + math.log1p(math.exp(-1))) / 2
    assert got.item() == pytest.approx(want, abs=1e-12)


def test_sl_hand_values_with_and_without_positive():
    pos, neg = t([0.0]), t([[1.0, 0.0]])
    assert L.softmax_loss(pos, neg, tau=1.0).item() == pytest.approx(math.log(math.e + 1))
    assert L.softmax_loss(pos, neg, tau=1.0, include_positive=True).item() == pytest.approx(math.log(math.e + 2))
    assert L.softmax_loss(pos, neg, tau=0.5).item() == pytest.approx(math.log(math.exp(2) + 1))


def test_psl_hand_values():
    # d = 0 for every negative: act(0) = 1 for tanh/atan/relu, so loss = log K.
    for act in ("tanh", "atan", "relu"):
        assert L.psl(t([0.3]), t([[0.3, 0.3, 0.3]]), tau=0.05, activation=act).item() == pytest.approx(math.log(3))
    # One negative with d = 0.5: log act(0.5) / tau.
    pos, neg = t([0.0]), t([[0.5]])
    assert L.psl(pos, neg, tau=0.5, activation="relu").item() == pytest.approx(2 * math.log(1.5))
    assert L.psl(pos, neg, tau=0.5, activation="tanh").item() == pytest.approx(2 * math.log(math.tanh(0.5) + 1))
    assert L.psl(pos, neg, tau=0.25, activation="atan").item() == pytest.approx(4 * math.log(math.atan(0.5) + 1))


@pytest.mark.parametrize("tau", [0.005, 0.025, 0.05, 0.1, 0.25])
def test_psl_exp_equals_sl_at_double_temperature(tau):
    """PSL with act = exp on cos/2 scores == code-SL with tau_code = 2 tau on raw cosines (research §1(c))."""
    g = torch.Generator().manual_seed(1)
    cos_pos = torch.rand(7, generator=g, dtype=torch.float64) * 2 - 1
    cos_neg = torch.rand(7, 11, generator=g, dtype=torch.float64) * 2 - 1
    a = L.psl(cos_pos / 2, cos_neg / 2, tau=tau, activation="exp")
    b = L.softmax_loss(cos_pos, cos_neg, tau=2 * tau)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-10)


def test_bsl_equal_temperatures_is_sl():
    g = torch.Generator().manual_seed(2)
    pos, neg = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(L.bsl(pos, neg, tau1=0.1, tau2=0.1), L.softmax_loss(pos, neg, tau=0.1))


def test_adv_infonce_uniform_weights_is_sl_with_positive():
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(L.adv_infonce(pos, neg, tau=0.2, neg_weight=1.0),
                               L.softmax_loss(pos, neg, tau=0.2, include_positive=True))
    lw = L.adv_hardness_log_weights(torch.zeros(4, 6, dtype=torch.float64))
    torch.testing.assert_close(lw, torch.zeros_like(lw))
    # lambda multiplies the negative mass: log(1 + 64 * sum e^d).
    d = (neg - pos[:, None]) / 0.2
    want = torch.log1p(64 * d.exp().sum(1))
    torch.testing.assert_close(L.adv_infonce(pos, neg, tau=0.2), want)


def test_llpauc_hand_value_at_init():
    p = {k: t(v) for k, v in dict(a=1.0, b=0.0, s_pos=0.5, s_neg=0.5, gamma=0.0, theta_a=0.5, theta_b=0.5).items()}
    f = 0.5
    sp = lambda x: math.log1p(math.exp(5 * x)) / 5  # noqa: E731
    P = sp(-(f - 1) ** 2 + 2 * f - 0.5)
    Q = sp((f - 0) ** 2 + 2 * f - 0.5)
    want = -0.5 - P / 0.7 + 0.5 + Q / 0.01 - 0 + 0.5 * 1 + 0.5 * 1
    got = L.llpauc(t([f, f]), t([[f, f, f]] * 2), params=p, alpha=0.7, beta=0.01)
    assert got.item() == pytest.approx(want)


LOSSES = {
    "bpr": lambda p, n, m: L.bpr(p, n, m),
    "sl": lambda p, n, m: L.softmax_loss(p, n, m, tau=0.1),
    "sl_paper": lambda p, n, m: L.softmax_loss(p, n, m, tau=0.1, include_positive=True),
    "psl-tanh": lambda p, n, m: L.psl(p, n, m, tau=0.05, activation="tanh"),
    "psl-atan": lambda p, n, m: L.psl(p, n, m, tau=0.05, activation="atan"),
    "psl-relu": lambda p, n, m: L.psl(p, n, m, tau=0.05, activation="relu"),
    "bsl": lambda p, n, m: L.bsl(p, n, m, tau1=0.2, tau2=0.05),
    "adv": lambda p, n, m: L.adv_infonce(p, n, m, tau=0.1),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck_float64(name):
    g = torch.Generator().manual_seed(4)
    # cos/2 scale, away from relu's kink at d = -1
    pos = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    neg = (torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5).requires_grad_()
    mask = torch.tensor([[True, True, False, True], [True] * 4, [False, True, True, True]])
    assert torch.autograd.gradcheck(lambda p, n: LOSSES[name](p, n, mask), (pos, neg))
    assert torch.autograd.gradcheck(lambda p, n: LOSSES[name](p, n, None), (pos, neg))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_at_extremes(name, dtype):
    """d = +-1 (the cos/2 range), tau = 0.005 (power 200), masks: loss and gradients stay finite."""
    pos = torch.tensor([0.5, -0.5, 0.5, 0.0], dtype=dtype, requires_grad=True)
    neg = torch.tensor([[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5], [0.0, 0.0]], dtype=dtype, requires_grad=True)
    mask = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    fns = {
        "psl-relu": lambda p, n, m: L.psl(p, n, m, tau=0.005, activation="relu"),
        "psl-tanh": lambda p, n, m: L.psl(p, n, m, tau=0.005, activation="tanh"),
        "psl-atan": lambda p, n, m: L.psl(p, n, m, tau=0.005, activation="atan"),
        "sl": lambda p, n, m: L.softmax_loss(p, n, m, tau=0.005),
        "sl_paper": lambda p, n, m: L.softmax_loss(p, n, m, tau=0.005, include_positive=True),
        "bsl": lambda p, n, m: L.bsl(p, n, m, tau1=0.005, tau2=0.005),
        "adv": lambda p, n, m: L.adv_infonce(p, n, m, tau=0.005),
    }
    fn = fns.get(name, LOSSES[name])
    for m in (None, mask):
        out = fn(pos, neg, m)
        assert torch.isfinite(out).all(), (name, m, out)
        gp, gn = torch.autograd.grad(out.sum(), (pos, neg))
        assert torch.isfinite(gp).all() and torch.isfinite(gn).all()


def test_psl_relu_zero_gradient_below_kink():
    """log ReLU(d+1) at d <= -1 contributes nothing and gets no gradient (research §1 PSL (b))."""
    pos = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    neg = torch.tensor([[-0.5, 0.3]], dtype=torch.float64, requires_grad=True)
    out = L.psl(pos, neg, tau=0.1, activation="relu")
    assert out.item() == pytest.approx(math.log(0.8) / 0.1, rel=1e-9)
    (gn,) = torch.autograd.grad(out.sum(), (neg,))
    assert gn[0, 0].item() == 0.0


def test_bad_names_and_temperatures():
    with pytest.raises(ConfigError, match="unknown loss"):
        L.make_loss("psll")
    with pytest.raises(ConfigError, match="activation"):
        L.make_loss("psl", activation="sigmoid")
    for bad in (0.0, -0.1):
        with pytest.raises(ConfigError, match="must be > 0"):
            L.make_loss("sl", tau=bad)
        with pytest.raises(ConfigError, match="must be > 0"):
            L.make_loss("bsl", tau1=0.1, tau2=bad)


def test_make_loss_rejects_unknown_hyperparameters():
    """A misspelled loss_kwargs key must not silently fall back to the default."""
    import pytest

    from prefrec.errors import ConfigError
    from prefrec.losses import make_loss

    with pytest.raises(ConfigError, match="did you mean 'tau'"):
        make_loss("psl", taux=3)
    with pytest.raises(ConfigError, match="bpr takes none"):
        make_loss("bpr", tau=3)
    make_loss("bsl", tau1=0.1, tau2=0.2)  # the real keys still work
