"""wordlist, better-profanity's fixed word list as a judge: binary, matches leetspeak spellings on whole words,
takes a custom list, builds from its Hydra config, and ranks the insults test split's insults above the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from rectify.data.sources import read_insults
from rectify.scoring import build_scorer
from rectify.scoring.wordlist import WordListScorer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scorer" / "wordlist.yaml"


@pytest.fixture(scope="module")
def judge() -> WordListScorer:
    return build_scorer(OmegaConf.load(CONFIG))


def test_scores_one_for_a_listed_word_and_zero_otherwise(judge):
    scores = judge(["what a shitty day", "what a sh1tty day", "a lovely walk in the park", "", "Scunthorpe"])
    assert judge.name == "wordlist" and scores.dtype == np.float64
    assert scores.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # leetspeak matched; no match inside a longer word


def test_a_custom_list_replaces_the_default():
    judge = WordListScorer(words=["pineapple"])
    assert judge(["I like pineapple", "what a shitty day"]).tolist() == [1.0, 0.0]


def test_ranks_held_out_insults_above_the_rest(judge):
    rows = read_insults("test")[:800]
    scores = judge([r.text for r in rows])
    assert set(np.unique(scores)) <= {0.0, 1.0}
    assert roc_auc_score([r.label for r in rows], scores) > 0.6
