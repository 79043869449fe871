"""Bootstrap intervals of a rule's *cut* against plain sampling, resampling prompts jointly for both runs.

A cut (``1 - rule / plain`` of Toxicity Probability or EMT) is what a re-check on other prompts is compared
with: other prompts have other base rates, so the rectified Toxicity Probability itself need not match, but the
relative cut should. Both runs generated on the same prompts, so one resample of prompt indices is applied to
both (a paired bootstrap); the interval is then narrower and honest about the pairing.

Per-generation scores come from the evaluation's score caches (``<generations>.scores/<scorer>.json``, keyed by
text), so this reads what ``scripts/evaluate.py`` already computed and scores nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rectify.evaluation.bootstrap import bootstrap_ci
from rectify.evaluation.cache import cache_dir_for, read_cache
from rectify.evaluation.generations import GenerationSet, read_generations
from rectify.evaluation.summary import group_flat, subset_indices
from rectify.evaluation.toxicity import TOXIC_THRESHOLD, any_toxic_per_prompt, max_per_prompt

EMPTY_SCORE = 0.0  # what evaluation gives an empty generation (EvalOptions.empty_score)


@dataclass(frozen=True)
class Cut:
    """A relative cut with its paired bootstrap interval (fractions: 0.7 = 70% lower than plain)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


def cached_scores(gs: GenerationSet, scorer: str, empty_score: float = EMPTY_SCORE) -> list[np.ndarray]:
    """Per-prompt arrays of one scorer's cached scores; raises naming the cache when a text was never scored."""
    cache = cache_dir_for(gs.path) / f"{scorer}.json"
    if not cache.is_file():
        raise FileNotFoundError(f"{cache}: no cached {scorer} scores; run scripts/evaluate.py on {gs.path} first")
    values = read_cache(cache).get("values", {})
    _, texts, _ = gs.flat()
    flat = []
    for t in texts:
        if not t.strip():
            flat.append(empty_score)
        elif t in values:
            flat.append(float(values[t]))
        else:
            raise KeyError(f"{cache}: a generation of {gs.path} has no cached score ({t[:40]!r})")
    return group_flat(np.asarray(flat, dtype=np.float64), [len(g) for g in gs.generations])


def paired_cut(plain: np.ndarray, rule: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> Cut:
    """``1 - mean(rule) / mean(plain)`` over prompts, with a percentile interval from joint prompt resamples."""
    plain, rule = np.asarray(plain, dtype=np.float64), np.asarray(rule, dtype=np.float64)
    if plain.shape != rule.shape:
        raise ValueError(f"paired cut needs the same prompts in both runs, got {plain.shape} and {rule.shape}")

    def stat(p: np.ndarray, r: np.ndarray) -> np.ndarray:
        base = p.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(base > 0, 1 - r.mean(axis=1) / np.where(base > 0, base, 1), np.nan)

    value = float(1 - rule.mean() / plain.mean()) if plain.size and plain.mean() > 0 else float("nan")
    low, high = bootstrap_ci(stat, plain, rule, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Cut(value, low, high)


def run_cuts(plain_path: str | Path, rule_path: str | Path, scorers: Sequence[str], subset: str = "nontoxic",
             threshold: float = TOXIC_THRESHOLD, **boot) -> dict[str, dict[str, Cut]]:
    """``{scorer: {"tox_prob": Cut, "emt": Cut}}`` of the rule's generations against plain's, one prompt subset."""
    plain_gs, rule_gs = read_generations(plain_path), read_generations(rule_path)
    if plain_gs.prompts != rule_gs.prompts:
        raise ValueError(f"{plain_path} and {rule_path} were generated on different prompts; a paired cut "
                         "needs the same prompts in the same order")
    idx = subset_indices(plain_gs.prompt_toxicity, subset)
    out = {}
    for name in scorers:
        plain_scores, rule_scores = cached_scores(plain_gs, name), cached_scores(rule_gs, name)
        p, r = [plain_scores[i] for i in idx], [rule_scores[i] for i in idx]
        out[name] = {"tox_prob": paired_cut(any_toxic_per_prompt(p, threshold), any_toxic_per_prompt(r, threshold),
                                            **boot),
                     "emt": paired_cut(max_per_prompt(p), max_per_prompt(r), **boot)}
    return out
