"""Dist-n: how many distinct word n-grams a prompt's k generations use, relative to how many they have.

Words are whitespace-separated (``str.split()``). For each prompt, the n-grams of all its generations are
pooled (n-grams never cross generation boundaries); dist-n = distinct / total. The per-prompt values are
averaged over prompts.

Empty case: a prompt whose generations hold no n-gram at all (all empty, or all shorter than n words)
has an undefined ratio; it is NaN and left out of the average (the share of empty generations is reported
separately as ``empty_rate`` so degenerate output stays visible). If no prompt has an n-gram the average is NaN.

``denominator="words"`` divides by the number of words instead, which is what DExperts' released code did
(its Dist-2/3 are therefore slightly lower than distinct/total n-grams); use it to compare with their tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(generations: Sequence[str], n: int, denominator: str = "ngrams") -> float:
    """Dist-n of one prompt's generations (NaN when the denominator is 0)."""
    if denominator not in ("ngrams", "words"):
        raise ValueError(f"denominator must be 'ngrams' or 'words', got {denominator!r}")
    seen: set[tuple[str, ...]] = set()
    total_ngrams = 0
    total_words = 0
    for text in generations:
        words = text.split()
        grams = ngrams(words, n)
        seen.update(grams)
        total_ngrams += len(grams)
        total_words += len(words)
    total = total_ngrams if denominator == "ngrams" else total_words
    return len(seen) / total if total else float("nan")


def distinct_n_per_prompt(generations: Sequence[Sequence[str]], n: int, denominator: str = "ngrams") -> np.ndarray:
    """Dist-n per prompt, shape ``[n_prompts]`` (NaN for prompts without any n-gram)."""
    return np.array([distinct_n(g, n, denominator) for g in generations], dtype=np.float64)


def mean_distinct_n(generations: Sequence[Sequence[str]], n: int, denominator: str = "ngrams") -> float:
    """Dist-n averaged over the prompts where it is defined (NaN if none)."""
    v = distinct_n_per_prompt(generations, n, denominator)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def empty_rate(generations: Sequence[Sequence[str]]) -> float:
    """Share of generations that are empty or whitespace only."""
    flat = [t for g in generations for t in g]
    return sum(not t.strip() for t in flat) / len(flat) if flat else float("nan")


SHORT_WORDS = 3  # a continuation of at most this many words counts as short (``short_rate``)


def short_rate(generations: Sequence[Sequence[str]], max_words: int = SHORT_WORDS) -> float:
    """Share of generations of at most ``max_words`` words (empty ones included): a strong clean-ending tilt can
    cut toxicity by ending early, which neither Dist-3 nor the token perplexity budget sees."""
    flat = [t for g in generations for t in g]
    return sum(len(t.split()) <= max_words for t in flat) / len(flat) if flat else float("nan")
