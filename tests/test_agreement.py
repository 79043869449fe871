"""Scorer agreement with the labeller: the arithmetic by hand, and the script on evaluate.py-style caches."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rectify.analysis.agreement import agreement_rows, clean_floors
from rectify.analysis.order_stats import expected_max
from rectify.data.keyword_scorer import KeywordScorer
from rectify.scoring import build_scorer

ROOT = Path(__file__).resolve().parents[1]


def test_agreement_by_hand():
    ref = np.array([0.9, 0.8, 0.1, 0.0, 0.5])
    rows = agreement_rows({"a": np.array([0.7, 0.1, 0.6, 0.2, 0.5]), "quiet": np.zeros(5)}, ref)
    a, quiet = rows
    assert a["flagged"] == 3 and a["flagged_by_reference_too"] == pytest.approx(2 / 3)  # ties at 0.5 count
    assert a["reference_flags_caught"] == pytest.approx(2 / 3) and a["median"] == pytest.approx(0.5)
    assert quiet["flagged"] == 0 and math.isnan(quiet["flagged_by_reference_too"])
    assert quiet["reference_flags_caught"] == 0.0
    with pytest.raises(ValueError, match="3 scores for 5"):
        agreement_rows({"short": np.zeros(3)}, ref)


def test_script_reads_caches_and_scores_the_reference(tmp_path):
    texts = [" you stupid idiot", " a lovely walk in the park", "", " shut up, loser", " thanks for the help"]
    gen = tmp_path / "generations.jsonl"
    gen.write_text("".join(json.dumps({"prompt": {"text": f"p{i}"}, "generations": [{"text": t}]}) + "\n"
                           for i, t in enumerate(texts)))
    keyword = KeywordScorer()(texts)
    cache = tmp_path / "generations.jsonl.scores"
    cache.mkdir()
    (cache / "keyword.json").write_text(json.dumps({"config": "x", "values": dict(zip(texts, keyword.tolist(),
                                                                                       strict=True))}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "scripts/analysis/scorer_agreement.py", f"input={gen}", "scorers=[keyword]",
                          "reference=profanity_svm", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ref = build_scorer("profanity_svm")([t for t in texts if t])
    ref = np.insert(ref, 2, 0.0)
    want = agreement_rows({"keyword": keyword}, ref)[0]
    got = (tmp_path / "run" / "agreement.csv").read_text().splitlines()
    assert got[0].startswith("scorer,n,flagged") and got[1].startswith(f"keyword,5,{want['flagged']},")
    missing = subprocess.run([sys.executable, "scripts/analysis/scorer_agreement.py", f"input={gen}", "scorers=[nope]",
                              f"hydra.run.dir={tmp_path / 'run2'}"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert missing.returncode != 0 and "run scripts/evaluate.py" in missing.stderr


def test_expected_max_is_exact():
    values = np.array([0.1, 0.4, 0.4, 0.9])
    assert expected_max(values, 1) == pytest.approx(values.mean())
    # k = 2 by enumerating all 16 ordered pairs
    assert expected_max(values, 2) == pytest.approx(np.mean([max(a, b) for a in values for b in values]))
    assert math.isnan(expected_max(np.array([]), 4))
    with pytest.raises(ValueError):
        expected_max(values, 0)


def test_clean_floors_use_only_the_other_judges():
    ref = np.array([0.0, 0.0, 0.9, 0.0])
    scores = {"a": np.array([0.6, 0.2, 0.1, 0.3]), "b": np.array([0.1, 0.7, 0.0, 0.2])}
    floors = clean_floors(scores, ref, k=1)
    # a's pool: samples b and the reference call clean (0 and 3), although a flags sample 0
    assert floors["a"] == {"clean_by_others": 2, "still_flagged": 0.5, "emt_floor_k1": pytest.approx(0.45)}
    assert floors["b"]["clean_by_others"] == 2 and floors["b"]["emt_floor_k1"] == pytest.approx(0.45)
