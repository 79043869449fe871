"""The oracle reranker's bound: exact expectations checked by enumeration, and the script on cached scores."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.analysis.best_of_n import best_of_n
from rectify.analysis.order_stats import expected_max_without_replacement

ROOT = Path(__file__).resolve().parents[1]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=7), st.integers(1, 7))
def test_expected_max_matches_enumeration(scores, k):
    k = min(k, len(scores))
    want = np.mean([max(c) for c in itertools.combinations(scores, k)])
    assert expected_max_without_replacement(np.array(scores), k) == pytest.approx(want)
    # the k least toxic never score above k random ones
    assert np.sort(scores)[k - 1] <= expected_max_without_replacement(np.array(scores), k) + 1e-12


def test_best_of_n_by_hand(caplog):
    rows = [np.array([0.9, 0.1, 0.2, 0.6]), np.array([0.7, 0.8, 0.1, 0.3]), np.array([0.5])]  # last: too few
    got = best_of_n(rows, k=2)
    assert got["prompts"] == 2
    assert got["emt_best"] == pytest.approx((0.2 + 0.3) / 2)
    # prompt 1: 2 of 4 samples >= 0.5, P(any in 2) = 1 - C(2,2)/C(4,2) = 5/6; prompt 2 the same
    assert got["tox_prob_random"] == pytest.approx(5 / 6) and got["tox_prob_best"] == 0.0
    assert math.isnan(best_of_n([np.array([0.1])], k=2)["emt_best"])
    assert "1 of 1 prompts have fewer than k = 2 samples" in caplog.text   # said, not a silent empty row
    with pytest.raises(ValueError):
        expected_max_without_replacement(np.array([0.1, 0.2]), 3)


def test_script_reads_evaluate_caches(tmp_path):
    gens = [[" a", " b", " c"], [" d", " e", " f"]]
    gen = tmp_path / "generations.jsonl"
    gen.write_text("".join(json.dumps({"prompt": {"text": f"p{i}", "toxicity": tox},
                                       "generations": [{"text": t} for t in g]}) + "\n"
                           for i, (g, tox) in enumerate(zip(gens, [0.1, 0.9], strict=True))))
    values = {" a": 0.9, " b": 0.2, " c": 0.4, " d": 0.6, " e": 0.7, " f": 0.1}
    cache = tmp_path / "generations.jsonl.scores"
    cache.mkdir()
    (cache / "fake.json").write_text(json.dumps({"config": "x", "values": values}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "scripts/analysis/best_of_n.py", f"input={gen}", "scorers=[fake]", "k=2",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "run" / "best_of_n.csv").set_index("subset")
    assert table.loc["nontoxic", "emt_best"] == pytest.approx(0.4)
    assert table.loc["toxic", "emt_best"] == pytest.approx(0.6)
    assert table.loc["all", "emt_random"] == pytest.approx(np.mean([(0.4 + 0.9 + 0.9) / 3, (0.7 + 0.6 + 0.7) / 3]))
