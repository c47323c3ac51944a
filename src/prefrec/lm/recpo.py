"""RecPO: preference intensity x recency as an adaptive margin inside S-DPO.

Ouyang et al., "What Makes LLMs Effective Sequential Recommenders? A Study on Preference
Intensity and Temporal Context" (arXiv 2506.02261). Formulas from the development code
(HoytWen/RecPO, ``research/lm_side.md`` §3); the paper's equations were not retrievable.

*Preference score* of a candidate: ``s = rating / (1 + step)^decay`` (decay 0.5), ``step`` = 0
for the interaction right after the history, 1 for the one after, ... Random non-interacted
fill items get rating 3 and step 10 (``s = 3 / sqrt(11) ~ 0.905``), as the authors.

*Training cases* (:func:`build_recpo_cases`): for each window of a TRAINING user's sequence,
candidates = the user's future interactions (the "follow sequence", up to ``max_follow``) +
random non-interacted items up to 20; chosen = the top-scored candidate (which is not always
the immediate next item), kept only if its rating >= 4; negatives = the other candidates.

*Test protocol*: unchanged. Validation and test cases are exactly S-DPO's
:func:`prefrec.data.sequences.ml100k_lm_splits` cases (same users, windows and candidates, the
true next item as the answer), so RecPO and S-DPO numbers are directly comparable. Windowing
defaults to S-DPO's (history <= 10, >= 3 items); the authors used 20 / 5 (options).

*Loss* (:func:`recpo_batch_loss`): ``softplus(logsumexp_j(r_j - r_w + m_j))`` with
``m_j = lambda * s_w / s_j`` (``margin: ratio``) or ``lambda * log(1 + s_w - s_j)``
(``margin: log``), ``r`` the S-DPO implicit rewards (or ``beta * log pi`` reference-free). The
chosen item must beat negative j by more when its intensity/recency advantage is larger.
``lambda = 0`` is S-DPO. Samples without preference scores (the S-DPO validation cases) get
``m_j = 0``, so ``eval_loss`` of a RecPO run is the plain S-DPO loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from prefrec.errors import ConfigError, DataError
from prefrec.losses import recpo_margin, sdpo

Tensor = torch.Tensor

__all__ = ["preference_score", "RecPOCase", "build_recpo_cases", "recpo_splits", "recpo_lm_samples",
           "RecpoOptions", "recpo_batch_margins", "recpo_batch_loss", "RecpoObjective",
           "PREF_SCORES_KEY", "RecpoConfig", "recpo_options", "recpo_objective", "recpo_train_samples"]

PREF_SCORES_KEY = "recpo_scores"  # LMSample.extra key: per-candidate preference scores


def preference_score(rating: float | np.ndarray, step: float | np.ndarray, decay: float = 0.5):
    """``rating / (1 + step)^decay``: intensity (the star rating) discounted by how far in the
    future the interaction is. ``decay = 0`` ignores recency."""
    if decay < 0:
        raise ConfigError(f"decay={decay} must be >= 0", where="recpo.decay", fix="use the authors' 0.5")
    if isinstance(rating, np.ndarray) or isinstance(step, np.ndarray):
        return np.asarray(rating, dtype=np.float64) / np.power(1.0 + np.asarray(step, dtype=np.float64), decay)
    return float(rating) / (1.0 + float(step)) ** decay


@dataclass(frozen=True)
class RecPOCase:
    """A training case: ``case`` is a :class:`SequenceCase` whose ``target`` is the CHOSEN
    (top-scored) candidate; the tuples are aligned with ``case.candidates``."""

    case: Any  # prefrec.data.sequences.SequenceCase
    ratings: tuple[float, ...]
    steps: tuple[int, ...]
    scores: tuple[float, ...]
    is_follow: tuple[bool, ...]

    @property
    def chosen_score(self) -> float:
        return self.scores[self.case.target_pos]


def _require_rating_time(inter, dataset: str) -> None:
    missing = [n for n, col in (("ratings", inter.rating), ("timestamps", inter.timestamp)) if col is None]
    if missing:
        raise DataError(f"dataset {dataset!r} has no {' and no '.join(missing)}; RecPO's preference score "
                        "rating / (1 + step)^decay needs star ratings and time order",
                        where=dataset,
                        fix="use a dataset with rating and timestamp columns, e.g. ml-100k "
                            "(loss: recpo is not available for implicit/untimed data)")


def _case_entropy(seed: int, user: int, chosen: int, history: tuple[int, ...]) -> list[int]:
    """A case's own generator seed, so its fill items never depend on which other cases exist."""
    import zlib

    return [int(seed) & 0xFFFFFFFF, 0x5EC70, user + 1, chosen + 1, len(history),
            zlib.crc32(np.asarray(history, dtype=np.int64).tobytes())]


def _sample_unseen(rng: np.random.Generator, n_items: int, seen: np.ndarray, k: int, dataset: str) -> list[int]:
    """``k`` distinct items uniformly from the catalog minus ``seen`` (sorted unique)."""
    free = np.setdiff1d(np.arange(n_items), seen, assume_unique=True)
    if len(free) < k:
        raise DataError(f"only {len(free)} non-interacted items left to fill {k} candidates", where=dataset,
                        fix="use fewer candidates (n_candidates) or a larger catalog")
    return [int(x) for x in rng.choice(free, size=k, replace=False)]


def build_recpo_cases(inter, *, dataset: str = "<data>", n_candidates: int = 20, max_follow: int = 20,
                      max_history: int = 10, min_history: int = 3, decay: float = 0.5,
                      fill_rating: float = 3.0, fill_step: int = 10, min_chosen_rating: float = 4.0,
                      max_cases: int | None = 10_000, seed: int = 0, exclude=None) -> list[RecPOCase]:
    """RecPO training cases from ``inter`` (pass the TRAINING users' interactions only).

    Every window t of a user's time-ordered sequence with ``>= min_history`` history items gives
    one candidate list: future items ``t, t+1, ...`` (steps 0, 1, ...; at most ``max_follow`` and
    ``n_candidates``) then random items the user never interacted with (in ``exclude``, default
    ``inter``) with ``fill_rating``/``fill_step``. The case is kept only if its top-scored
    candidate has rating >= ``min_chosen_rating``. Ties on the top score go to the earlier
    item. Candidate order is shuffled; ``max_cases`` keeps a seeded random subset (authors:
    10,000). Deterministic given ``seed``; each case's generator is seeded from the case itself.
    """
    from prefrec.data.sequences import SequenceCase, user_sequences

    _require_rating_time(inter, dataset)
    if n_candidates < 2 or max_follow < 1:
        raise ConfigError(f"n_candidates={n_candidates} and max_follow={max_follow} too small",
                          where="recpo", fix="use n_candidates: 20, max_follow: 20 (authors)")
    if max_history < 1 or not 0 <= min_history <= max_history:
        raise ConfigError(f"need 0 <= min_history ({min_history}) <= max_history ({max_history})",
                          where="recpo.min_history", fix="S-DPO windows: 10 / 3; RecPO authors: 20 / 5")
    preference_score(1.0, 0.0, decay)  # validates decay
    fill_score = preference_score(fill_rating, fill_step, decay)
    excl_src = exclude if exclude is not None else inter
    per_user = excl_src.user_items()
    out: list[RecPOCase] = []
    for u, rows in user_sequences(inter).items():
        items = inter.item[rows].tolist()
        ratings = inter.rating[rows].tolist()
        times = inter.timestamp[rows].tolist()
        seen = np.unique(np.concatenate([per_user[u] if u < len(per_user) else np.zeros(0, np.int64),
                                         np.asarray(items, dtype=np.int64)]))
        for t in range(max(min_history, 1), len(items)):
            lo = max(0, t - max_history)
            hist = tuple(items[lo:t])
            n_follow = min(max_follow, n_candidates, len(items) - t)
            f_items, f_ratings, f_steps = [], [], []
            for s in range(n_follow):
                it = items[t + s]
                if it in f_items or it in hist:  # a re-interaction is not a new candidate
                    continue
                f_items.append(it)
                f_ratings.append(float(ratings[t + s]))
                f_steps.append(s)
            if not f_items:
                continue
            f_scores = [preference_score(r, s, decay) for r, s in zip(f_ratings, f_steps)]
            best = int(np.argmax(f_scores))  # first max = earliest item on ties
            if f_scores[best] < fill_score or f_ratings[best] < min_chosen_rating:
                continue  # chosen would be a random fill or a low rating: the authors drop these
            rng = np.random.default_rng(_case_entropy(seed, u, f_items[best], hist))
            n_fill = n_candidates - len(f_items)
            fill = _sample_unseen(rng, inter.n_items, seen, n_fill, dataset) if n_fill else []
            cands = f_items + fill
            c_ratings = f_ratings + [float(fill_rating)] * n_fill
            c_steps = f_steps + [int(fill_step)] * n_fill
            c_scores = f_scores + [fill_score] * n_fill
            follow = [True] * len(f_items) + [False] * n_fill
            perm = rng.permutation(len(cands))
            pos = int(np.flatnonzero(perm == best)[0])
            case = SequenceCase(user=u, history=hist, target=f_items[best],
                                candidates=tuple(int(cands[i]) for i in perm), target_pos=pos,
                                history_ratings=tuple(float(r) for r in ratings[lo:t]), timestamp=float(times[t]))
            out.append(RecPOCase(case, tuple(c_ratings[i] for i in perm), tuple(c_steps[i] for i in perm),
                                 tuple(float(c_scores[i]) for i in perm), tuple(follow[i] for i in perm)))
    if max_cases is not None and len(out) > max_cases:
        keep = np.sort(np.random.default_rng([int(seed) & 0xFFFFFFFF, 7]).choice(len(out), max_cases, replace=False))
        out = [out[i] for i in keep]
    return out


def recpo_splits(dataset, *, seed: int = 0, max_history: int = 10, min_history: int = 3,
                 n_candidates: int = 20, **kwargs: Any) -> dict[str, list]:
    """``{"train": [RecPOCase], "val": [SequenceCase], "test": [SequenceCase]}`` for a rated,
    timed dataset (MovieLens-100K).

    ``val``/``test`` are EXACTLY :func:`prefrec.data.sequences.ml100k_lm_splits`'s cases (S-DPO's
    protocol); ``train`` are RecPO cases over the same training users (user split 8:1:1 with
    ``seed``), so no val/test user's interactions reach training. ``kwargs`` go to
    :func:`build_recpo_cases`.
    """
    from prefrec.data.sequences import ml100k_lm_splits
    from prefrec.data.splits import user_split

    name = getattr(dataset, "name", "<data>")
    _require_rating_time(dataset.interactions, name)
    ref = ml100k_lm_splits(dataset, seed=seed, max_history=max_history, min_history=min_history,
                           n_candidates=n_candidates)
    parts = user_split(dataset.interactions, (0.8, 0.1, 0.1), seed=seed)
    train = build_recpo_cases(parts["train"], dataset=name, n_candidates=n_candidates, max_history=max_history,
                              min_history=min_history, seed=seed, exclude=dataset.interactions, **kwargs)
    out = {"train": train}
    out.update({k: v for k, v in ref.items() if k != "train"})
    return out


def recpo_lm_samples(cases: Sequence[RecPOCase], to_sample: Callable[[Any], Any]) -> list:
    """LM samples for RecPO cases: ``to_sample`` is the S-DPO pipeline's SequenceCase -> LMSample
    converter (same prompt template as S-DPO); per-candidate preference scores, ratings and steps
    go to ``extra`` aligned with ``candidates``."""
    out = []
    for rc in cases:
        s = to_sample(rc.case)
        if len(s.candidates) != len(rc.scores) or s.target_index != rc.case.target_pos:
            raise DataError("the prompt builder reordered or dropped candidates of a RecPO case",
                            where=f"user {rc.case.user}", fix="keep SequenceCase candidate order in the converter")
        s.extra = {**(s.extra or {}), PREF_SCORES_KEY: list(rc.scores), "recpo_ratings": list(rc.ratings),
                   "recpo_steps": list(rc.steps)}
        out.append(s)
    return out


# ----------------------------------------------------------------------------- loss
@dataclass
class RecpoOptions:
    """RecPO knobs (trainer config ``loss_kwargs`` for ``loss: recpo``); defaults = authors'."""

    margin: Literal["ratio", "log"] = "ratio"
    lam: float = 1.0
    decay: float = 0.5

    def validate(self, where: str = "recpo") -> None:
        if self.margin not in ("ratio", "log"):
            raise ConfigError(f"unknown RecPO margin {self.margin!r}", where=f"{where}.margin",
                              fix="use 'ratio' (lambda * s_w / s_j) or 'log' (lambda * log(1 + s_w - s_j))")
        if not (self.lam >= 0 and np.isfinite(self.lam)):
            raise ConfigError(f"lambda={self.lam} must be finite and >= 0", where=f"{where}.lambda",
                              fix="use 0.5, 1 or 2 (authors' scripts); 0 = S-DPO")
        if self.decay < 0:
            raise ConfigError(f"decay={self.decay} must be >= 0", where=f"{where}.decay", fix="use 0.5")


def recpo_batch_margins(score_pos: Tensor, score_neg: Tensor, *, lam: float, mode: str = "ratio",
                        mask: Tensor | None = None) -> Tensor:
    """(B, K) margins ``m_j`` from preference scores of the chosen (B,) and negatives (B, K).

    Scores must be > 0 (ratings >= 1 give that). Masked entries get 0. Non-finite scores
    (missing) also give 0 there: such rows train as plain S-DPO.
    """
    sp = score_pos.detach().to(torch.float64)
    sn = score_neg.detach().to(torch.float64)
    ok = torch.isfinite(sn) & torch.isfinite(sp).unsqueeze(1)
    if mask is not None:
        ok = ok & mask.bool()
    m = recpo_margin(torch.nan_to_num(sp, nan=1.0), torch.nan_to_num(sn, nan=1.0), lam=lam, mode=mode)
    return torch.where(ok, m, torch.zeros_like(m)).to(score_neg.dtype if score_neg.is_floating_point() else torch.float32)


def recpo_batch_loss(pos_rewards: Tensor, neg_rewards: Tensor, score_pos: Tensor, score_neg: Tensor, *,
                     lam: float, mode: str = "ratio", mask: Tensor | None = None) -> Tensor:
    """Per-row RecPO loss ``softplus(logsumexp_j(r_j - r_w + m_j))`` (B,)."""
    m = recpo_batch_margins(score_pos, score_neg, lam=lam, mode=mode, mask=mask).to(neg_rewards.dtype)
    return sdpo(pos_rewards, neg_rewards, mask, margin=m)


class RecpoObjective:
    """The preference trainer's objective for ``loss: recpo`` (see ``train/preference.py``'s
    ``Objective``): reads per-candidate preference scores from ``samples[i].extra`` by the
    batch's ``rows``/``cols``; samples without them (S-DPO validation cases) get margin 0."""

    def __init__(self, opts: RecpoOptions, *, reference_free: bool = False):
        opts.validate()
        self.opts = opts
        self.reference_free = reference_free

    def scores_for(self, samples: Sequence[Any], rows: Sequence[int], cols: Tensor) -> Tensor:
        """(B, 1+K) preference scores aligned with ``cols`` (NaN where a sample has none)."""
        out = torch.full(tuple(cols.shape), float("nan"), dtype=torch.float64)
        for b, (i, c) in enumerate(zip(rows, cols.tolist())):
            sc = (samples[i].extra or {}).get(PREF_SCORES_KEY)
            if sc is not None:
                out[b] = torch.tensor([sc[j] for j in c], dtype=torch.float64)
        return out

    def __call__(self, batch) -> tuple[Tensor, Tensor, dict[str, float]]:
        ref = torch.zeros_like(batch.reference) if self.reference_free else batch.reference
        r = batch.beta * (batch.policy - ref)
        s = self.scores_for(batch.samples, batch.rows, batch.cols)
        m = recpo_batch_margins(s[:, 0], s[:, 1:], lam=self.opts.lam, mode=self.opts.margin).to(r.dtype)
        per_row = sdpo(r[:, 0], r[:, 1:], margin=m)
        return per_row.mean(), per_row, {"recpo/margin": float(m.mean())}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ----------------------------------------------------------------------------- config section
def _recpo_config_cls():
    """``recpo:`` section; built with ``create_model`` so the YAML key can be ``lambda``."""
    from typing import Literal as _Lit

    from pydantic import Field, create_model

    from prefrec.config import Config

    return create_model(
        "RecpoConfig", __base__=Config,
        __doc__="``recpo:`` section of the preference trainer config (used when ``loss: recpo``).",
        margin=(_Lit["ratio", "log"], Field("ratio", description="ratio: lambda*s_w/s_j; log: lambda*log(1+s_w-s_j)")),
        decay=(float, Field(0.5, ge=0, description="s = rating / (1 + step)^decay")),
        max_follow=(int, Field(20, ge=1, description="future interactions used as candidates")),
        max_cases=(int | None, Field(10_000, ge=1, description="seeded random subset of training cases (authors)")),
        min_chosen_rating=(float, Field(4.0, description="drop cases whose top candidate is rated lower")),
        max_history=(int, Field(10, ge=1, description="history window (S-DPO 10; RecPO authors 20)")),
        min_history=(int, Field(3, ge=0, description="shortest history (S-DPO 3; RecPO authors 5)")),
        **{"lambda": (float, Field(1.0, ge=0, description="margin weight; 0 = S-DPO"))},
    )


RecpoConfig = _recpo_config_cls()


def recpo_options(cfg: Any) -> RecpoOptions:
    """:class:`RecpoOptions` from a preference config's ``recpo`` section (validated)."""
    sec = getattr(cfg, "recpo", None) or RecpoConfig()
    opts = RecpoOptions(margin=sec.margin, lam=float(getattr(sec, "lambda")), decay=sec.decay)
    opts.validate()
    return opts


def recpo_objective(cfg: Any) -> RecpoObjective:
    """The trainer's objective for ``loss: recpo`` (reference-based unless ``reference_free``)."""
    return RecpoObjective(recpo_options(cfg), reference_free=bool(getattr(cfg, "reference_free", False)))


def recpo_train_samples(cfg: Any, limit: int | None, seed: int, to_sample: Callable[[Any], Any] | None = None,
                        split_seed: int | None = None) -> list:
    """RecPO training samples for ``cfg.dataset`` (must have ratings and timestamps).

    Built over the training users of the same user split as the S-DPO samples
    (``split_seed``, default ``seed``), rendered with the S-DPO prompt template
    (``to_sample``: SequenceCase -> LMSample; default :func:`prefrec.lm.prompts.case_sample`
    style converter found in :mod:`prefrec.lm.prompts`). ``limit`` keeps the first cases.
    """
    from prefrec.data.registry import load_dataset

    sec = getattr(cfg, "recpo", None) or RecpoConfig()
    ds = load_dataset(cfg.dataset, getattr(cfg, "data_dir", None))
    sp = recpo_splits(ds, seed=split_seed if split_seed is not None else seed, max_history=sec.max_history,
                      min_history=sec.min_history, decay=sec.decay, max_follow=sec.max_follow,
                      max_cases=sec.max_cases, min_chosen_rating=sec.min_chosen_rating)
    cases = sp["train"][:limit] if limit else sp["train"]
    if to_sample is None:
        to_sample = _default_converter(ds)
    return recpo_lm_samples(cases, to_sample)


def _default_converter(ds) -> Callable[[Any], Any]:
    """The S-DPO pipeline's SequenceCase -> LMSample converter, looked up in prefrec.lm.prompts."""
    try:
        from prefrec.lm import prompts
    except ImportError as e:
        raise ConfigError("prefrec.lm.prompts is not available to render RecPO prompts", where="loss: recpo",
                          fix="pass to_sample= explicitly") from e
    for name in ("case_to_sample", "sample_from_case", "case_sample", "make_sample"):
        fn = getattr(prompts, name, None)
        if fn is not None:
            return lambda c, _fn=fn: _fn(c, ds.catalog)
    raise ConfigError("no SequenceCase -> LMSample converter found in prefrec.lm.prompts", where="loss: recpo",
                      fix="pass to_sample= explicitly")
