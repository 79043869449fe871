"""insult_lr, the judge fitted on the insults train split's human labels: a real judge on held-out comments,
deterministic, built the same way from its Hydra config, and clear about bad training input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from rectify.data.sources import read_insults
from rectify.scoring import build_scorer
from rectify.scoring.insult_lr import InsultLRScorer

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scorer" / "insult_lr.yaml"


@pytest.fixture(scope="module")
def judge() -> InsultLRScorer:
    return build_scorer("insult_lr")


def test_ranks_held_out_insults_above_the_rest(judge):
    rows = read_insults("test")[:800]  # never in its training split
    scores = judge([r.text for r in rows])
    assert scores.shape == (len(rows),) and np.all((scores >= 0) & (scores <= 1))
    assert roc_auc_score([r.label for r in rows], scores) > 0.8


def test_refitting_from_the_config_gives_the_same_scores(judge):
    import hydra.utils

    texts = ["You are a stupid idiot!", "Thanks for the lovely dinner.", ""]
    again = hydra.utils.instantiate(OmegaConf.load(CONFIG))
    assert again.name == "insult_lr"
    np.testing.assert_allclose(again(texts), judge(texts), rtol=0, atol=1e-12)
    assert judge(texts)[0] > judge(texts)[1] + 0.3


def test_given_training_texts_replace_the_insults_split():
    texts = ["you idiot", "idiot moron", "stupid idiot", "nice day", "lovely day", "nice work"]
    s = InsultLRScorer(min_df=1, train_texts=texts, train_labels=[1, 1, 1, 0, 0, 0])
    a = s(["what an idiot", "a nice lovely day"])
    assert a[0] > 0.5 > a[1]


@pytest.mark.parametrize(("texts", "labels", "match"), [
    (["a", "b"], [1, 1], "both labels"),
    (["a", "b"], None, "both train_texts and train_labels"),
])
def test_bad_training_input_is_refused(texts, labels, match):
    with pytest.raises(ValueError, match=match):
        InsultLRScorer(min_df=1, train_texts=texts, train_labels=labels)
