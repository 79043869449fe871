"""rectify.analysis.continuation_shape reads lengths and the judge's per-text cache the way evaluation does."""

from __future__ import annotations

import json
import math

import pytest

from rectify.analysis.continuation_shape import continuation_shape, shape_table


def _run(tmp_path, per_prompt):
    """Two prompts x 3 generations; the judge cache holds every generation (nll, tokens)."""
    gens = {"A": ["one two three four", "ok.", ""], "B": ["a b", "c d e f g", "h i j k"]}
    nll = {("A", "one two three four"): (4.0, 4), ("A", "ok."): (6.0, 2), ("A", ""): (0.0, 0),
           ("B", "a b"): (2.0, 2), ("B", "c d e f g"): (20.0, 5), ("B", "h i j k"): (4.0, 4)}
    run = tmp_path / "rule"
    run.mkdir()
    with open(run / "generations.jsonl", "w") as fh:
        for p, g in gens.items():
            fh.write(json.dumps({"prompt": {"text": p}, "generations": [{"text": t} for t in g]}) + "\n")
    (run / "generations.eval.json").write_text(json.dumps({"rows": [{"ppl_samples_per_prompt": per_prompt}]}))
    cache = run / "generations.jsonl.scores"
    cache.mkdir()
    values = {f"{p}\x00{t}": list(v) for (p, t), v in nll.items()}
    (cache / "judge-gemma3-abcdef12.json").write_text(json.dumps({"config": "x", "values": values}))
    return run


def test_lengths_and_the_evaluations_perplexity_subsample(tmp_path):
    s = continuation_shape(_run(tmp_path, per_prompt=2), short_words=2)
    assert s.n == 6 and s.mean_words == pytest.approx((4 + 1 + 0 + 2 + 5 + 4) / 6)
    assert s.short_share == pytest.approx(3 / 6) and s.empty_share == pytest.approx(1 / 6)
    # first two of each prompt: A's "one two three four", "ok."; B's "a b", "c d e f g"
    assert s.judged == 4
    assert s.token_ppl == pytest.approx(math.exp((4 + 6 + 2 + 20) / (4 + 2 + 2 + 5)))
    per_gen = sorted([math.exp(1.0), math.exp(3.0), math.exp(1.0), math.exp(4.0)])
    assert s.median_ppl == pytest.approx((per_gen[1] + per_gen[2]) / 2)
    assert s.high_ppl_share == 0.0   # none over the default 1000
    assert "| rule | 6 |" in shape_table([s], short_words=2)


def test_all_generations_judged_when_the_evaluation_judged_all(tmp_path):
    s = continuation_shape(_run(tmp_path, per_prompt=None), high_ppl=10.0)
    assert s.judged == 5   # the empty generation has no tokens
    assert s.high_ppl_share == pytest.approx(2 / 5)   # exp(3) and exp(4) are over 10


def test_a_judged_generation_missing_from_the_cache_is_an_error(tmp_path):
    run = _run(tmp_path, per_prompt=2)
    cache = run / "generations.jsonl.scores" / "judge-gemma3-abcdef12.json"
    data = json.loads(cache.read_text())
    del data["values"]["B\x00a b"]
    cache.write_text(json.dumps(data))
    with pytest.raises(KeyError, match="not cached"):
        continuation_shape(run)
