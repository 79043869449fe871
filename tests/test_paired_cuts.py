"""Paired cut intervals read from the evaluation's score caches, in the demo summary and the re-check table: both
runs are resampled on the same prompts, and a re-check's cut is placed against the reported interval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.analysis.recheck import compare, difference
from rectify.evaluation.paired import Cut, paired_cut, run_cuts
from rectify.evaluation.pipeline import (
    EvalOptions,
    Lazy,
    ScorerSpec,
    evaluate_file,
    results_paths,
    write_rows,
)
from rectify.report.summary import demo_summary


def bad_scorer(texts: list[str]) -> np.ndarray:
    return np.array([0.9 if "bad" in t else 0.1 for t in texts])


SPEC = ScorerSpec(name="fake", fingerprint="v1", scorer=Lazy(lambda: bad_scorer))


def write_evaluated(root: Path, name: str, toxic_prompts: set[int], n: int = 40, k: int = 3) -> Path:
    """``root/name/generations.jsonl`` over the same n non-toxic prompts, toxic samples on ``toxic_prompts``,
    evaluated by the real pipeline (so the score cache is written)."""
    gen = root / name / "generations.jsonl"
    gen.parent.mkdir(parents=True)
    lines = [{"prompt": {"text": f"prompt {i}", "toxicity": 0.1},
              "generations": [{"text": f"bad {i}" if (i in toxic_prompts and j == 0) else f"fine {i} {j}"}
                              for j in range(k)]} for i in range(n)]
    gen.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = evaluate_file(gen, [SPEC], None, EvalOptions(progress=False))
    write_rows(rows, *results_paths(gen))
    return gen


def selection(path: Path, rule: str = "rule") -> Path:
    path.write_text(json.dumps({"selected": rule, "least_bad": rule, "runner_up": None,
                                "criterion": {"baseline": "plain", "judges": ["fake"], "text": "the test's"},
                                "dev": {"n_prompts": 10, "k": 3},
                                "candidates": [{"name": rule, "overrides": ["decoding.tilt=64"], "score": 0.5,
                                                "ppl_change": 0.0, "eligible": True, "reasons": []}]}))
    return path


def test_cut_and_interval_from_the_caches(tmp_path):
    plain = write_evaluated(tmp_path, "plain", set(range(20)))
    rule = write_evaluated(tmp_path, "rule", set(range(5)))
    cuts = run_cuts(plain, rule, ["fake"])
    tp = cuts["fake"]["tox_prob"]
    assert tp.value == pytest.approx(0.75)  # 20 -> 5 toxic prompts of 40
    assert tp.low < 0.75 < tp.high <= 1.0
    assert cuts["fake"]["emt"].value == pytest.approx(1 - (5 * 0.9 + 35 * 0.1) / (20 * 0.9 + 20 * 0.1))


def test_runs_on_different_prompts_are_refused(tmp_path):
    plain = write_evaluated(tmp_path, "plain", {1}, n=10)
    rule = write_evaluated(tmp_path, "rule", {1}, n=12)
    with pytest.raises(ValueError, match="different prompts"):
        run_cuts(plain, rule, ["fake"])
    with pytest.raises(FileNotFoundError, match="no cached other scores"):
        run_cuts(plain, plain, ["other"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=60), st.integers(0, 5))
def test_interval_holds_the_point_cut_of_any_paired_sample(pairs, seed):
    plain = np.array([float(p) for p, _ in pairs])
    rule = np.array([float(r) for _, r in pairs])
    cut = paired_cut(plain, rule, n_resamples=300, seed=seed)
    if plain.mean() == 0:
        assert np.isnan(cut.value)
    else:
        assert cut.value == pytest.approx(1 - rule.mean() / plain.mean())
        assert cut.low <= cut.high
    if np.array_equal(plain, rule) and plain.any():
        assert (cut.value, cut.low, cut.high) == (0.0, 0.0, 0.0)


def test_summary_shows_paired_intervals_and_recheck_places_cuts(tmp_path):
    sel = selection(tmp_path / "selected.json")
    write_evaluated(tmp_path / "test", "plain", set(range(20)))
    write_evaluated(tmp_path / "test", "rule", set(range(5)))
    text = demo_summary(tmp_path / "test", sel, {"tox_prob_cut": 0.4})
    tp = run_cuts(tmp_path / "test" / "plain" / "generations.jsonl", tmp_path / "test" / "rule" / "generations.jsonl",
                  ["fake"])["fake"]["tox_prob"]
    assert f"(-75% [{round(-100 * tp.high):+d}%, {round(-100 * tp.low):+d}%])" in text
    assert "with paired intervals" in text

    write_evaluated(tmp_path / "near", "plain", set(range(16)))
    write_evaluated(tmp_path / "near", "rule", set(range(4)))  # also -75%: inside
    table, rows = compare(tmp_path / "test", tmp_path / "near", sel)
    assert [r["inside"] for r in rows] == [True, True] and [r["consistent"] for r in rows] == [True, True]
    assert "2 of 2 re-check cuts lie inside" in table and "2 of 2 differ from the reported cut by less" in table

    write_evaluated(tmp_path / "far", "plain", set(range(20)))
    write_evaluated(tmp_path / "far", "rule", set(range(18)))  # -10%: outside
    _, rows = compare(tmp_path / "test", tmp_path / "far", sel)
    assert rows[0]["metric"] == "Toxicity Probability" and rows[0]["inside"] is False
    assert rows[0]["consistent"] is False


def test_recheck_keeps_its_own_runs_when_its_folder_also_holds_the_reported_runs_rows(tmp_path):
    # unseen_check.sh evaluates the reported test runs into a folder inside the re-check's: those rows carry the
    # same run names (plain, rule) and a later evaluated_at, and must not stand in for the re-check's runs
    sel = selection(tmp_path / "selected.json", "clean")  # sorts before evaluate_reported/
    reported = [write_evaluated(tmp_path / "test", name, toxic)
                for name, toxic in (("plain", set(range(20))), ("clean", set(range(5))))]
    write_evaluated(tmp_path / "far", "plain", set(range(20)))
    write_evaluated(tmp_path / "far", "clean", set(range(18)))  # -10%: outside the reported -75%'s interval
    rows = [r | {"evaluated_at": "2999-01-01T00:00:00+00:00"}
            for gen in reported for r in evaluate_file(gen, [SPEC], None, EvalOptions(progress=False))]
    write_rows(rows, tmp_path / "far" / "evaluate_reported" / "results.json")
    table, out = compare(tmp_path / "test", tmp_path / "far", sel)
    assert out[0]["metric"] == "Toxicity Probability" and out[0]["inside"] is False
    assert "-10%" in table.splitlines()[4]


@settings(max_examples=50, deadline=None)
@given(st.floats(-1, 1), st.floats(0.001, 0.5), st.floats(0.001, 0.5), st.floats(-1, 1))
def test_cut_difference_interval_is_wider_than_either_and_centred_on_the_difference(v, w1, w2, shift):
    reported, recheck = Cut(v, v - w1, v + w1), Cut(v + shift, v + shift - w2, v + shift + w2)
    d = difference(reported, recheck)
    assert d.value == pytest.approx(shift)
    assert d.high - d.low >= max(2 * w1, 2 * w2) - 1e-12
    assert difference(reported, reported).contains(0.0)
    # outside the combined error (more than both half-widths apart) is never called consistent
    if abs(shift) > w1 + w2:
        assert not d.contains(0.0)


def test_recheck_names_a_miss_against_a_zero_width_interval(tmp_path):
    sel = selection(tmp_path / "selected.json")
    write_evaluated(tmp_path / "test", "plain", set(range(20)))
    write_evaluated(tmp_path / "test", "rule", set())           # -100%: every resample gives -100%
    write_evaluated(tmp_path / "check", "plain", set(range(20)))
    write_evaluated(tmp_path / "check", "rule", {3})            # -95%
    table, rows = compare(tmp_path / "test", tmp_path / "check", sel)
    tp = next(r for r in rows if r["metric"] == "Toxicity Probability")
    assert tp["reported"].low == tp["reported"].high == 1.0 and tp["inside"] is False
    assert "**no** (zero-width)" in table and "Misses against a zero-width reported interval: 1 (" in table
    near, _ = compare(tmp_path / "test", tmp_path / "test", sel)   # the same runs: inside, nothing to note
    assert "zero-width" not in near
