"""The scorer AUC table: correct AUC on a hand-made case, markdown/CSV output, missing scorers reported."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rectify.data.sources import LabelledText
from rectify.scoring import auc
from rectify.scoring.base import Scorer


class LengthScorer(Scorer):
    """Toy scorer: longer text = more toxic."""

    name = "length"

    def _score_batch(self, texts):
        return np.array([min(1.0, len(t) / 10) for t in texts])


def test_score_auc_on_a_hand_made_case():
    rows = [LabelledText("a", 0, "x:1"), LabelledText("aaaa", 1, "x:2"), LabelledText("aa", 0, "x:3"),
            LabelledText("aaa", 1, "x:4")]
    res = auc.score_auc(LengthScorer(), rows)
    assert res["auc"] == pytest.approx(1.0) and res["n"] == 4 and res["toxic_share"] == 0.5
    rows[0] = LabelledText("aaaaaaa", 0, "x:1")  # one negative now outranks both positives
    assert auc.score_auc(LengthScorer(), rows)["auc"] == pytest.approx(0.5)


def test_run_writes_table_and_reports_missing(tmp_path):
    cfg = {"split": "test", "max_texts": 40, "include": ["profanity_svm", "reward_model"], "skip_missing": True,
           "scorers": {"reward_model": {"_target_": "rectify.scoring.reward_model.RewardModelScorer",
                                        "path": str(tmp_path / "none")}}}
    table = auc.run(cfg)
    assert table[0]["scorer"] == "profanity_svm" and 0.5 < table[0]["auc"] <= 1.0 and table[0]["n"] == 40
    assert table[1]["status"].startswith("missing")
    md, csv_path = auc.write(table, tmp_path / "out")
    text = md.read_text()
    assert text.splitlines()[0].startswith("| scorer | auc |") and "profanity_svm" in text
    with open(csv_path) as fh:
        assert [r["scorer"] for r in csv.DictReader(fh)] == ["profanity_svm", "reward_model"]
    with pytest.raises(FileNotFoundError):
        auc.run({**cfg, "skip_missing": False})


class KeylessScorer(Scorer):
    """Loads, then fails on its first texts (as Perspective does without an API key)."""

    name = "keyless"

    def _score_batch(self, texts):
        raise RuntimeError("keyless: no API key (set KEYLESS_API_KEY)")


def test_a_scorer_failing_on_its_first_texts_gets_a_row_and_the_others_are_kept(tmp_path):
    cfg = {"split": "test", "max_texts": 20, "include": ["keyless", "profanity_svm"], "skip_missing": True,
           "scorers": {"keyless": {"_target_": "tests.test_scorer_auc.KeylessScorer"}}}
    table = auc.run(cfg)
    assert table[0]["status"] == "failed: keyless: no API key (set KEYLESS_API_KEY)"
    assert table[1]["scorer"] == "profanity_svm" and table[1]["n"] == 20
    with pytest.raises(RuntimeError, match="no API key"):
        auc.run({**cfg, "skip_missing": False})


def test_config_composes_every_scorer_group_entry(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    config_dir = str(Path(__file__).resolve().parents[1] / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("scorer_auc", overrides=[f"paths.output_dir={tmp_path}"])
    node = OmegaConf.to_container(cfg.auc, resolve=True)
    assert set(node["include"]) <= set(node["scorers"])
    assert all("_target_" in c for c in node["scorers"].values())
    assert node["scorers"]["hatesonar"]["locale"] == "C.UTF-8"
