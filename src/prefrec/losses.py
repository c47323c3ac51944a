"""Every loss in prefrec: one preferred item against K negatives.

All functions are pure and share one signature::

    loss(pos: (B,), neg: (B, K), mask: (B, K) bool | None, **hyper) -> (B,)

``pos`` / ``neg`` are scores of the preferred item and of the negatives for the same row:
dot products or cosines of embeddings (MF, LightGCN, SASRec) or implicit LM rewards
``beta * (log pi(y|x) - log pi_ref(y|x))``. ``mask`` marks valid negatives (False entries are
ignored, so rows may have different numbers of negatives). A loss never knows its backbone:
"PSL over LM rewards" and "S-DPO over MF scores" are both one config line.

Everything is computed in log space with ``logsumexp`` so large |score| / small temperatures
never overflow.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from prefrec.errors import ConfigError

Tensor = torch.Tensor
LossFn = Callable[..., Tensor]

__all__ = ["bpr", "softmax_loss", "psl", "bsl", "dpo", "sdpo", "napo_margin", "recpo_margin",
           "adv_infonce", "adv_hardness_log_weights", "llpauc", "listwise_softmax",
           "LOSS_NAMES", "MINMAX_LOSSES", "MINMAX_DEFAULTS", "make_loss", "make_minmax_loss", "reduce_rows"]


def _masked(x: Tensor, mask: Tensor | None, fill: float) -> Tensor:
    if mask is None:
        return x
    return x.masked_fill(~mask.bool(), fill)


def _diff(pos: Tensor, neg: Tensor) -> Tensor:
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    if pos.dim() != 1 or neg.dim() != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(f"expected pos (B,) and neg (B, K); got {tuple(pos.shape)} and {tuple(neg.shape)}")
    return neg - pos.unsqueeze(1)


def bpr(pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bayesian Personalized Ranking (Rendle et al., UAI 2009, Eq. 7), averaged over negatives:
    ``mean_j softplus(s_j - s_pos) = mean_j -log sigma(s_pos - s_j)``."""
    d = _diff(pos, neg)
    sp = F.softplus(d)
    if mask is None:
        return sp.mean(dim=1)
    m = mask.to(sp.dtype)
    return (sp * m).sum(1) / m.sum(1).clamp_min(1.0)


def softmax_loss(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, tau: float = 0.1,
                 include_positive: bool = False) -> Tensor:
    """Sampled Softmax Loss (SL).

    ``include_positive=False`` (IR-Benchmark code form): ``logsumexp_j((s_j - s_pos)/tau)``.
    ``include_positive=True`` (PSL paper Eq. 2.4 form, positive also in the denominator):
    ``logsumexp([0, (s_j - s_pos)/tau]) = -log softmax(s_pos/tau)``. The two differ by the
    positive's own term only; both are offered because the papers and the code disagree.
    """
    d = _masked(_diff(pos, neg) / tau, mask, -math.inf)
    if include_positive:
        d = torch.cat([torch.zeros_like(d[:, :1]), d], dim=1)
    return torch.logsumexp(d, dim=1)


_ACTIVATIONS = ("tanh", "atan", "relu", "exp")


def _log_activation(d: Tensor, activation: str) -> Tensor:
    """log sigma(d) for PSL's surrogate activations (PSL paper Sec. 4, Lemma 4.1)."""
    tiny = torch.finfo(d.dtype).tiny
    if activation == "tanh":
        # tanh(d)+1 = 2*sigmoid(2d): log form is exact and stable for any d.
        return math.log(2.0) + F.logsigmoid(2.0 * d)
    if activation == "atan":
        return torch.log(torch.clamp(torch.atan(d) + 1.0, min=tiny))
    if activation == "relu":
        # log ReLU(d+1) is -inf at d <= -1; a floor at the float's smallest positive value keeps
        # rows finite and only changes terms whose true value is exp(-inf) = 0.
        return torch.log(torch.clamp(d + 1.0, min=tiny))
    if activation == "exp":
        return d
    raise ConfigError(f"unknown PSL activation {activation!r}", fix=f"use one of {', '.join(_ACTIVATIONS)}")


def psl(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, tau: float = 0.1,
        activation: Literal["tanh", "atan", "relu", "exp"] = "tanh") -> Tensor:
    """Pairwise Softmax Loss (Yang et al., NeurIPS 2024, Eq. 4.1):
    ``log sum_j act(d_j)^(1/tau) = logsumexp_j(log act(d_j) / tau)``, ``d_j = s_j - s_pos``.

    Scores are expected on the paper's ``cos/2`` scale so that ``d`` lies in [-1, 1]; the CF
    trainer does that scaling. The temperature sits outside the activation (the paper's form;
    the "inside" form is much worse, Table C.6). ``activation='exp'`` gives SL at temperature
    ``tau`` on the same scale, i.e. code-SL with ``tau_code = 2*tau`` on raw cosines.
    """
    d = _diff(pos, neg)
    z = _masked(_log_activation(d, activation) / tau, mask, -math.inf)
    return torch.logsumexp(z, dim=1)


def bsl(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, tau1: float = 0.1,
        tau2: float = 0.1) -> Tensor:
    """Bilateral Softmax Loss (Wu et al., ICDE 2024):
    ``-s_pos/tau1 + (tau2/tau1) * logsumexp_j(s_j/tau2)``. Equal temperatures give SL."""
    if neg.dim() == 1:
        neg = neg.unsqueeze(1)
    z = _masked(neg / tau2, mask, -math.inf)
    return -pos / tau1 + (tau2 / tau1) * torch.logsumexp(z, dim=1)


def sdpo(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, margin: Tensor | None = None,
         gamma: Tensor | float = 0.0) -> Tensor:
    """Softmax-DPO (Chen et al., NeurIPS 2024, Eq. 11) over implicit rewards, stable form:
    ``softplus(logsumexp_j(r_j - r_w + m_j) + gamma)`` = ``-log sigma(-log sum_j exp(r_j - r_w + m_j) - gamma)``.

    ``pos``/``neg`` are rewards already scaled by beta. ``margin`` (B, K) is RecPO's per-negative
    margin inside the softmax; ``gamma`` (scalar or (B,)) is NAPO's reward margin outside it.
    With K = 1 and no margins this is DPO. At initialisation (all rewards 0) it equals log(1+K).
    """
    d = _diff(pos, neg)
    if margin is not None:
        d = d + margin
    z = _masked(d, mask, -math.inf)
    return F.softplus(torch.logsumexp(z, dim=1) + gamma)


def dpo(pos: Tensor, neg: Tensor, mask: Tensor | None = None) -> Tensor:
    """DPO (Rafailov et al., NeurIPS 2023, Eq. 7): ``softplus(r_l - r_w) = -log sigma(r_w - r_l)``, K = 1."""
    d = _diff(pos, neg)
    if d.shape[1] != 1:
        raise ValueError(f"dpo takes exactly one negative per row, got {d.shape[1]}; use sdpo for K > 1")
    return F.softplus(d[:, 0])


def napo_margin(confidence: Tensor, running_mean: Tensor | float, *, gamma0: float = 1.0,
                alpha: float = 0.3) -> Tensor:
    """NAPO dynamic reward margin ``gamma_t = gamma0 * (1 - alpha * (M_b - Mbar))``.

    ``confidence`` is the batch's mean sequential-model score of its negatives (M_b): negatives
    scored higher than usual are more likely false negatives and get a smaller margin.
    """
    return gamma0 * (1.0 - alpha * (confidence - running_mean))


def recpo_margin(score_pos: Tensor, score_neg: Tensor, *, lam: float = 1.0,
                 mode: Literal["ratio", "log"] = "ratio") -> Tensor:
    """RecPO margin per negative from preference scores ``s = rating / (1 + step)^decay``:
    ratio: ``lam * s_w / s_j``; log: ``lam * log(1 + s_w - s_j)`` (clamped at 0 inside the log's domain)."""
    sw = score_pos.unsqueeze(1)
    if mode == "ratio":
        return lam * sw / score_neg.clamp_min(1e-8)
    if mode == "log":
        return lam * torch.log1p((sw - score_neg).clamp_min(-1 + 1e-6))
    raise ConfigError(f"unknown RecPO margin mode {mode!r}", fix="use 'ratio' or 'log'")


LOSS_NAMES = ("bpr", "sl", "sl_paper", "psl", "bsl", "dpo", "sdpo")

MINMAX_LOSSES = ("advinfonce", "llpauc")
"""Losses that train extra state beside the model (AdvInfoNCE's adversary, LLPAUC's a, b, gamma...).
Only the CF trainer runs them (:func:`make_minmax_loss`); :func:`make_loss` validates their
hyperparameters and then refuses them with a clear error."""

MINMAX_DEFAULTS: dict[str, dict[str, float | int]] = {
    "advinfonce": {"tau": 0.1, "neg_weight": 64.0, "lr_adv": 5e-5, "epoch_adv": 5},
    "llpauc": {"alpha": 0.7, "beta": 0.01, "kappa": 5.0}}
"""IR-Benchmark defaults (research cf_side.md §1): AdvInfoNCE ``--neg_weight=64 --lr_adv=5e-5
--epoch_adv=5``; LLPAUC kappa 5 and the paper's most common optimum alpha 0.7, beta 0.01."""


_MINMAX_FLAT = {k: v for d in MINMAX_DEFAULTS.values() for k, v in d.items()}

_LOSS_HYPER: dict[str, set[str]] = {
    "bpr": set(), "sl": {"tau"}, "sl_paper": {"tau"}, "psl": {"tau", "activation"}, "bsl": {"tau1", "tau2"},
    "dpo": set(), "sdpo": set(),
    "advinfonce": {"tau", "neg_weight", "lr_adv", "epoch_adv"}, "llpauc": {"alpha", "beta", "kappa"}}
"""Hyperparameters each loss takes: any other key is a (misspelled) config key, not a default."""


def _check_hyper(name: str, hyper: dict) -> None:
    """Unknown keys (with a did-you-mean), temperatures > 0 and the min-max losses' ranges."""
    import difflib

    allowed = _LOSS_HYPER.get(name)
    if allowed is not None:
        unknown = sorted(set(hyper) - allowed)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(allowed), n=1)
            raise ConfigError(f"loss {name!r} has no hyperparameter {unknown[0]!r}", where="loss_kwargs",
                              fix=(f"did you mean {close[0]!r}? " if close else "")
                              + (f"{name} takes {', '.join(sorted(allowed))}" if allowed else f"{name} takes none"))
    for key in ("tau", "tau1", "tau2"):
        if key in hyper and hyper[key] is not None and not hyper[key] > 0:
            raise ConfigError(f"temperature {key}={hyper[key]} must be > 0", where=f"loss.{key} (loss {name!r})",
                              fix="use a small positive value such as 0.05")
    for key in ("neg_weight", "lr_adv", "kappa"):
        if key in hyper and not (isinstance(hyper[key], (int, float)) and math.isfinite(hyper[key])
                                 and hyper[key] > 0):
            raise ConfigError(f"{key}={hyper[key]!r} must be a finite number > 0", where=f"loss {name!r}",
                              fix=f"use the IR-Benchmark default {key}={_MINMAX_FLAT[key]}")
    if "epoch_adv" in hyper:
        e = hyper["epoch_adv"]
        if isinstance(e, bool) or not isinstance(e, int) or e < 2:
            raise ConfigError(f"epoch_adv={e!r} must be an integer >= 2 (every epoch_adv-th epoch trains only "
                              "the adversary, so 1 would never train the model)", where=f"loss {name!r}",
                              fix="use the IR-Benchmark default epoch_adv=5")
    for key in ("alpha", "beta"):
        if key in hyper and not (isinstance(hyper[key], (int, float)) and 0 < hyper[key] <= 1):
            raise ConfigError(f"LLPAUC {key}={hyper[key]!r} must be in (0, 1] (a TPR/FPR bound)",
                              where=f"loss {name!r}", fix="e.g. alpha=0.7, beta=0.01 (the paper's optimum)")


def make_loss(name: str, **hyper) -> LossFn:
    """A loss by config name with its hyperparameters bound; validates names and temperatures.

    Names: ``bpr``, ``sl`` (code form, no positive in denominator), ``sl_paper`` (positive in
    the denominator), ``psl`` (``tau``, ``activation``), ``bsl`` (``tau1``, ``tau2``), ``dpo``, ``sdpo``.
    The min-max names (``advinfonce``, ``llpauc``) are validated, then refused here: they need
    state only the CF trainer keeps (see :func:`make_minmax_loss`).
    """
    import difflib

    _check_hyper(name, hyper)
    if name in MINMAX_LOSSES:
        raise ConfigError(f"loss {name!r} trains extra parameters beside the model "
                          + ("(an adversary)" if name == "advinfonce" else "(a, b, gamma, s+, s-)")
                          + " and only `prefrec train-cf` / `compare` / `run` (cf:) can train it",
                          where="loss", fix=f"use it as loss.name in a CF config, or one of {', '.join(LOSS_NAMES)}")
    if name == "bpr":
        return lambda p, n, m=None: bpr(p, n, m)
    if name in ("sl", "sl_paper"):
        tau = hyper.get("tau", 0.1)
        inc = name == "sl_paper"
        return lambda p, n, m=None: softmax_loss(p, n, m, tau=tau, include_positive=inc)
    if name == "psl":
        tau, act = hyper.get("tau", 0.1), hyper.get("activation", "tanh")
        if act not in _ACTIVATIONS:
            close = difflib.get_close_matches(str(act), _ACTIVATIONS, n=1)
            raise ConfigError(f"unknown PSL activation {act!r}", where="loss.activation",
                              fix=f"use one of {', '.join(_ACTIVATIONS)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return lambda p, n, m=None: psl(p, n, m, tau=tau, activation=act)
    if name == "bsl":
        t1, t2 = hyper.get("tau1", 0.1), hyper.get("tau2", 0.1)
        return lambda p, n, m=None: bsl(p, n, m, tau1=t1, tau2=t2)
    if name == "dpo":
        return lambda p, n, m=None: dpo(p, n, m)
    if name == "sdpo":
        return lambda p, n, m=None: sdpo(p, n, m)
    close = difflib.get_close_matches(str(name), LOSS_NAMES, n=1)
    raise ConfigError(f"unknown loss {name!r}", where="loss.name",
                      fix=f"use one of {', '.join(LOSS_NAMES)}" + (f" (did you mean {close[0]!r}?)" if close else ""))


def make_minmax_loss(name: str, **hyper) -> LossFn:
    """``advinfonce`` / ``llpauc`` with hyperparameters bound, validated like :func:`make_loss`.

    - ``advinfonce`` (``tau``, ``neg_weight``, ``lr_adv``, ``epoch_adv``) ->
      ``fn(pos, neg, mask=None, *, log_weights=None) -> (B,)``; ``lr_adv``/``epoch_adv`` are
      validated here and read by the trainer (they schedule the adversary, not the formula).
    - ``llpauc`` (``alpha``, ``beta``, ``kappa``) -> ``fn(pos, neg, mask=None, *, params) -> ()``,
      ``pos``/``neg`` probabilities (the trainer applies the sigmoid), a batch scalar.

    Missing keys take :data:`MINMAX_DEFAULTS`.
    """
    _check_hyper(name, hyper)
    if name not in MINMAX_LOSSES:
        import difflib

        close = difflib.get_close_matches(str(name), MINMAX_LOSSES, n=1)
        raise ConfigError(f"{name!r} is not a min-max loss", where="loss.name",
                          fix=f"use one of {', '.join(MINMAX_LOSSES)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    h = {**MINMAX_DEFAULTS[name], **hyper}
    if name == "advinfonce":
        tau, lam = float(h["tau"]), float(h["neg_weight"])
        return lambda p, n, m=None, *, log_weights=None: adv_infonce(p, n, m, tau=tau, log_weights=log_weights,
                                                                      neg_weight=lam)
    alpha, beta, kappa = float(h["alpha"]), float(h["beta"]), float(h["kappa"])
    return lambda p, n, m=None, *, params: llpauc(p, n, m, params=params, alpha=alpha, beta=beta, kappa=kappa)


def listwise_softmax(logps: Tensor, target: Tensor, lengths: Tensor | None = None, *,
                     tau: float = 1.0) -> Tensor:
    """Reference-free listwise softmax over ALL candidates of a row (an LM ranking objective):
    ``-log softmax_c(s_c / tau)[target]`` with ``s_c = logps[:, c]`` (summed answer log-prob) or,
    when ``lengths`` (answer tokens per candidate) is given, ``s_c = logps[:, c] / lengths[:, c]``
    (length-normalised). Trains exactly what rank evaluation reads: the order of the candidates'
    likelihoods given one shared prompt. Returns (B,).

    Same value as ``softmax_loss(pos, neg, include_positive=True, tau=tau)`` on those scores;
    kept separate because its input is the (B, C) candidate matrix, not (pos, neg).
    """
    if logps.dim() != 2 or target.shape != logps.shape[:1]:
        raise ValueError(f"expected logps (B, C) and target (B,); got {tuple(logps.shape)} and {tuple(target.shape)}")
    if tau <= 0:
        raise ConfigError(f"tau={tau}", where="listwise_softmax", fix="use a temperature > 0")
    s = logps if lengths is None else logps / lengths.to(logps.dtype).clamp_min(1.0)
    s = s / tau
    return torch.logsumexp(s, dim=1) - s.gather(1, target.long().unsqueeze(1)).squeeze(1)


def reduce_rows(per_row: Tensor) -> Tensor:
    """Mean over rows; the one reduction every trainer uses (users weighted by interactions)."""
    return per_row.mean()


# ----------------------------------------------------------------------------- CF baselines (appended)
def adv_hardness_log_weights(hardness: Tensor, mask: Tensor | None = None) -> Tensor:
    """AdvInfoNCE log-weights ``log w_k = log(N * softmax_k(g_k))`` from adversary scores ``g`` (B, K).

    Zhang et al., NeurIPS 2023 (IR-Benchmark optim_AdvInfoNCE): ``w = N * softmax(g)`` so uniform
    hardness gives ``w_k = 1`` (plain InfoNCE). Masked slots get ``-inf`` and N counts valid slots only.
    """
    g = _masked(hardness, mask, -math.inf)
    n = hardness.new_full((hardness.shape[0], 1), hardness.shape[1]) if mask is None \
        else mask.to(hardness.dtype).sum(1, keepdim=True).clamp_min(1.0)
    return torch.log(n) + torch.log_softmax(g, dim=1)


def adv_infonce(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, tau: float = 0.1,
                log_weights: Tensor | None = None, neg_weight: float = 64.0) -> Tensor:
    """AdvInfoNCE (Zhang et al., NeurIPS 2023) as in IR-Benchmark, positive in the denominator:
    ``-log( e^{s+/tau} / (e^{s+/tau} + lambda * sum_k w_k e^{s_k/tau}) )``
    ``= softplus(log lambda + logsumexp_k(log w_k + (s_k - s+)/tau))``.

    ``log_weights`` (B, K) comes from :func:`adv_hardness_log_weights` (detach it for the model
    step, keep its graph for the adversary step); None means ``w_k = 1``. ``tau`` is in the units
    of the scores (IR-Benchmark code units: raw cosine / tau). Stable at any |s|/tau (log space).
    """
    d = _diff(pos, neg) / tau
    if log_weights is not None:
        d = d + log_weights
    z = _masked(d, mask, -math.inf)
    return F.softplus(math.log(neg_weight) + torch.logsumexp(z, dim=1))


def _softplus_kappa(x: Tensor, kappa: float) -> Tensor:
    return F.softplus(kappa * x) / kappa


def llpauc(pos: Tensor, neg: Tensor, mask: Tensor | None = None, *, params: dict[str, Tensor],
           alpha: float = 0.7, beta: float = 0.01, kappa: float = 5.0) -> Tensor:
    """LLPAUC (Shi et al., WWW 2024) min-max surrogate as coded in IR-Benchmark optim_LLPAUC.

    ``pos``/``neg`` are probabilities ``f = sigmoid(score)``. ``params`` holds the scalar tensors
    ``a, b, s_pos, s_neg, gamma, theta_a, theta_b`` (initial 1, 0, .5, .5, 0, .5, .5). Returns the
    **batch** loss (a scalar, not per row) because P and Q are means over different sets:
    ``L = -s+ - P/alpha + s- + Q/beta - gamma^2 + theta_a (a + gamma) + theta_b (gamma + 1 - b)``,
    ``P = mean_rows sp_k(-(f+ - a)^2 + 2(1+gamma) f+ - s+)``,
    ``Q = mean_{rows,negs} sp_k((f- - b)^2 + 2(1+gamma) f- - s-)``, ``sp_k(x) = log(1+e^{kx})/k``.
    """
    p = params
    g = p["gamma"]
    big_p = _softplus_kappa(-(pos - p["a"]) ** 2 + 2 * (1 + g) * pos - p["s_pos"], kappa).mean()
    q = _softplus_kappa((neg - p["b"]) ** 2 + 2 * (1 + g) * neg - p["s_neg"], kappa)
    if mask is None:
        big_q = q.mean()
    else:
        m = mask.to(q.dtype)
        big_q = (q * m).sum() / m.sum().clamp_min(1.0)
    return (-p["s_pos"] - big_p / alpha + p["s_neg"] + big_q / beta - g ** 2
            + p["theta_a"] * (p["a"] + g) + p["theta_b"] * (g + 1 - p["b"]))
