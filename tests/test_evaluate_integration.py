"""evaluate.py's defaults end to end: the three real evaluation scorers and the bundled Gemma judge."""

from __future__ import annotations

import math

import pytest

from rectify.evaluation.runner import run_evaluation
from tests.test_evaluate import RECORDS, _cfg, write_generations

pytestmark = pytest.mark.integration


def test_default_scorers_and_gemma_judge(tmp_path):
    gen = write_generations(tmp_path / "g" / "generations.jsonl", RECORDS, meta={"decoding": {"rectify": False}})
    rows = run_evaluation(_cfg(tmp_path, f"eval.input={gen}", "eval.bootstrap.n=100", "eval.progress=false"))
    assert {r["scorer"] for r in rows} == {"profanity_svm", "jigsaw_lstm_tcc", "hatesonar"}
    for r in rows:
        assert r["judge"] == "gemma3" and 1 < r["ppl"] < 1e5 and not math.isnan(r["emt"])
    toxic = {r["scorer"]: r["emt"] for r in rows if r["subset"] == "toxic"}
    assert all(v > 0.5 for v in toxic.values()), toxic  # "stupid stupid" is toxic under every scorer
