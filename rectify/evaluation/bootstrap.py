"""Percentile bootstrap over prompts: resample prompts with replacement, recompute the statistic.

The statistic is vectorised: it receives each per-prompt array indexed by a ``[n_resamples, n_prompts]``
index matrix and returns one value per resample. Using the same seed for every metric of one run draws the
same resamples for all of them, so CIs of different metrics are paired.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(x)
    n = ok.sum(axis=1)
    s = np.where(ok, x, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def bootstrap_ci(
    statistic: Callable[..., np.ndarray],
    *per_prompt: np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 200,
) -> tuple[float, float]:
    """(low, high) percentile interval of ``statistic`` over prompt resamples; NaN if undefined."""
    arrays = [np.asarray(a, dtype=np.float64) for a in per_prompt]
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one per-prompt array")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise ValueError("all per-prompt arrays must have the same length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0 or n_resamples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        values.append(np.asarray(statistic(*[a[idx] for a in arrays]), dtype=np.float64))
    v = np.concatenate(values)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, **kw) -> tuple[float, float]:
    """CI of the mean over prompts (NaN entries are skipped, as in the point estimate)."""
    return bootstrap_ci(_nanmean_rows, values, **kw)


def perplexity_ci(nll_sum: np.ndarray, n_tokens: np.ndarray, **kw) -> tuple[float, float]:
    """CI of the token-weighted perplexity exp(sum nll / sum tokens), resampling prompts."""

    def stat(s: np.ndarray, c: np.ndarray) -> np.ndarray:
        tokens = c.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tokens > 0, np.exp(s.sum(axis=1) / np.maximum(tokens, 1)), np.nan)

    return bootstrap_ci(stat, nll_sum, n_tokens, **kw)
