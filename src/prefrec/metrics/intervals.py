"""95 % confidence intervals for metrics averaged over evaluation cases.

Why: an LM table row "HR@1 0.05" over 40 cases is compatible with anything from ~0.01 to ~0.17;
without the interval (and the number of cases) a reader cannot tell a difference from noise.

- Proportions (HR@K, ValidRatio: one 0/1 value per case): the Wilson score interval, which
  stays inside [0, 1] and behaves at 0 and 1 hits, unlike the normal approximation.
- Other per-case means (NDCG@K, MRR): a percentile bootstrap over cases (seeded, 2,000
  resamples), so the interval is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``hits / n`` (95 % by default)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_mean(values: Sequence[float], *, resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    a = (1 - level) / 2
    return (float(np.quantile(means, a)), float(np.quantile(means, 1 - a)))


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Wilson when every value is 0 or 1, else the bootstrap."""
    v = np.asarray(values, dtype=np.float64)
    if v.size and np.all((v == 0) | (v == 1)):
        return wilson(int(v.sum()), int(v.size))
    return bootstrap_mean(v)


def rank_case_values(ranks: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
    """Per-case HR@K, NDCG@K and reciprocal rank from the target's 1-based rank (what
    :mod:`prefrec.metrics.candidates` averages)."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"HR@{k}"] = (r <= k).astype(np.float64)
        out[f"NDCG@{k}"] = np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)
    out["MRR"] = 1.0 / r
    return out
