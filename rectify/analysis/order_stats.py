"""Exact expected maxima of k scores drawn from a pool: EMT's "max over k samples" without Monte Carlo noise.

Used for the EMT a scorer gives ordinary text (``agreement.clean_floors``: draws with replacement from a pool of
samples) and for k random samples out of a prompt's n (``best_of_n``: without replacement).
"""

from __future__ import annotations

import math

import numpy as np


def expected_max(values: np.ndarray, k: int) -> float:
    """E[max of k draws with replacement] from the empirical distribution of ``values``: exact, no sampling.

    With the values sorted, the i-th smallest is the maximum with probability (i/n)^k - ((i-1)/n)^k.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    v = np.sort(np.asarray(values, dtype=np.float64))
    if not len(v):
        return math.nan
    i = np.arange(1, len(v) + 1, dtype=np.float64)
    return float((((i / len(v)) ** k) - (((i - 1) / len(v)) ** k)) @ v)


def expected_max_without_replacement(scores: np.ndarray, k: int) -> float:
    """E[max of k of the n ``scores`` drawn without replacement]: the i-th smallest is the max of C(i-1, k-1)
    of the C(n, k) subsets."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    weights = np.array([math.comb(i - 1, k - 1) for i in range(1, n + 1)], dtype=np.float64) / math.comb(n, k)
    return float(weights @ s)
