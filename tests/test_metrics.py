"""Toxicity, diversity and bootstrap metrics on hand-made inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.evaluation import (
    any_toxic_per_prompt,
    bootstrap_ci,
    distinct_n,
    distinct_n_per_prompt,
    empty_rate,
    expected_maximum_toxicity,
    max_per_prompt,
    mean_ci,
    mean_distinct_n,
    perplexity_ci,
    short_rate,
    toxicity_probability,
)

# ----------------------------------------------------------------------------- toxicity


def test_emt_and_tox_prob_by_hand():
    scores = [[0.1, 0.7, 0.2], [0.3, 0.4, 0.05], [0.9, 0.95, 0.6]]
    mean, std = expected_maximum_toxicity(scores)
    maxima = [0.7, 0.4, 0.95]
    assert mean == pytest.approx(sum(maxima) / 3)
    mu = sum(maxima) / 3
    assert std == pytest.approx(math.sqrt(sum((m - mu) ** 2 for m in maxima) / 3))
    assert toxicity_probability(scores) == pytest.approx(2 / 3)


def test_k_equals_one():
    scores = [[0.2], [0.8], [0.5]]
    assert max_per_prompt(scores).tolist() == [0.2, 0.8, 0.5]
    assert expected_maximum_toxicity(scores)[0] == pytest.approx(0.5)
    assert toxicity_probability(scores) == pytest.approx(2 / 3)


def test_ties_at_threshold_count_as_toxic():
    assert toxicity_probability([[0.5]]) == 1.0
    assert toxicity_probability([[np.nextafter(0.5, 0)]]) == 0.0
    assert any_toxic_per_prompt([[0.1, 0.5], [0.49, 0.2]]).tolist() == [1.0, 0.0]
    assert toxicity_probability([[0.3]], threshold=0.3) == 1.0


def test_ragged_k_and_bad_input():
    assert toxicity_probability([[0.1], [0.2, 0.6, 0.1]]) == 0.5
    with pytest.raises(ValueError, match="prompt 1 has no scored samples"):
        max_per_prompt([[0.1], []])
    with pytest.raises(ValueError, match="NaN"):
        max_per_prompt([[float("nan")]])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=1, max_size=6), min_size=1, max_size=20))
def test_toxicity_invariants(scores):
    emt, std = expected_maximum_toxicity(scores)
    tp = toxicity_probability(scores)
    assert 0 <= emt <= 1 and std >= 0 and 0 <= tp <= 1
    # Every prompt whose max is >= 0.5 is toxic, so EMT >= 0.5 * TP and EMT <= TP + 0.5 * (1 - TP).
    assert emt >= 0.5 * tp - 1e-12
    assert emt <= tp + 0.5 * (1 - tp) + 1e-12
    # Adding a sample to a prompt never lowers either metric.
    more = [row + [1.0] if i == 0 else row for i, row in enumerate(scores)]
    assert expected_maximum_toxicity(more)[0] >= emt - 1e-12
    assert toxicity_probability(more) >= tp


# ----------------------------------------------------------------------------- diversity


def test_distinct_n_by_hand():
    gens = ["the cat sat", "the cat ran"]
    # unigrams: the cat sat the cat ran -> 4 distinct / 6
    assert distinct_n(gens, 1) == pytest.approx(4 / 6)
    # bigrams: (the cat)(cat sat)(the cat)(cat ran) -> 3 / 4; never across generations
    assert distinct_n(gens, 2) == pytest.approx(3 / 4)
    assert distinct_n(gens, 3) == pytest.approx(2 / 2)
    # DExperts' denominator: number of words
    assert distinct_n(gens, 2, denominator="words") == pytest.approx(3 / 6)


def test_distinct_n_whitespace_words_and_k1():
    assert distinct_n(["a  b\na\tb"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)


def test_distinct_n_empty_generations():
    # A prompt with no n-gram at all is undefined (NaN) and left out of the average.
    assert math.isnan(distinct_n(["", "   "], 1))
    assert math.isnan(distinct_n(["one two"], 3))
    per = distinct_n_per_prompt([["", ""], ["a b c", "a b d"], ["x"]], 2)
    assert math.isnan(per[0]) and per[1] == pytest.approx(3 / 4) and math.isnan(per[2])
    assert mean_distinct_n([["", ""], ["a b c", "a b d"]], 2) == pytest.approx(3 / 4)
    assert math.isnan(mean_distinct_n([[""], [""]], 1))
    # Empty generations inside a prompt simply contribute nothing.
    assert distinct_n(["", "a b"], 1) == pytest.approx(1.0)
    assert empty_rate([["", "a"], [" ", "b", "c"]]) == pytest.approx(2 / 5)
    assert short_rate([["", "a b c"], ["a b c d", " one  two "]]) == pytest.approx(3 / 4)
    assert short_rate([["a b c d"]], max_words=4) == 1.0 and math.isnan(short_rate([]))


def test_distinct_n_rejects_bad_args():
    with pytest.raises(ValueError):
        distinct_n(["a"], 0)
    with pytest.raises(ValueError):
        distinct_n(["a"], 1, denominator="chars")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet="ab ", max_size=20), min_size=1, max_size=5), st.integers(1, 3))
def test_distinct_n_bounds(gens, n):
    d = distinct_n(gens, n)
    if not math.isnan(d):
        assert 0 < d <= 1
        # Repeating the whole set of generations halves the ratio exactly.
        assert distinct_n(gens + gens, n) == pytest.approx(d / 2)


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    values = rng.uniform(size=200)
    lo, hi = mean_ci(values, n_resamples=500, seed=3)
    assert lo < values.mean() < hi
    assert (lo, hi) == mean_ci(values, n_resamples=500, seed=3)
    assert (lo, hi) != mean_ci(values, n_resamples=500, seed=4)
    # Wider confidence -> wider interval; shrinks roughly like 1/sqrt(n).
    lo99, hi99 = mean_ci(values, n_resamples=500, seed=3, confidence=0.99)
    assert lo99 <= lo and hi99 >= hi
    se = values.std() / np.sqrt(values.size)
    assert 2 * 1.96 * se * 0.7 < hi - lo < 2 * 1.96 * se * 1.3


def test_bootstrap_degenerate_cases():
    assert mean_ci(np.full(10, 0.3), n_resamples=50) == pytest.approx((0.3, 0.3))
    assert all(math.isnan(x) for x in mean_ci(np.array([]), n_resamples=50))
    assert all(math.isnan(x) for x in mean_ci(np.array([np.nan, np.nan]), n_resamples=50))
    with pytest.raises(ValueError):
        bootstrap_ci(lambda a, b: a.mean(1), np.zeros(3), np.zeros(4))


def test_perplexity_ci_is_token_weighted():
    nll = np.array([2.0, 30.0, 4.0])
    tok = np.array([1, 10, 2])
    point = math.exp(nll.sum() / tok.sum())
    lo, hi = perplexity_ci(nll, tok, n_resamples=300, seed=0)
    assert lo <= point <= hi
    assert lo < hi
    # A long prompt weighs more than a short one: exp(36/13), not the mean of per-prompt ppls.
    assert point == pytest.approx(math.exp(36 / 13))
    lo, hi = perplexity_ci(np.array([2.0, 20.0, 4.0]), tok, n_resamples=300, seed=0)
    assert lo == pytest.approx(hi) == pytest.approx(math.exp(2.0))  # every prompt has mean nll 2
