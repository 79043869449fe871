"""The ensemble labeller: max / mean over member scorers, built from names or configs."""

from __future__ import annotations

import numpy as np
import pytest

from rectify.data.keyword_scorer import KeywordScorer
from rectify.scoring import build_scorer
from rectify.scoring.ensemble import EnsembleScorer

TEXTS = [" you stupid idiot", " a lovely walk in the park", "", " the dumb one"]
KEYWORD = {"_target_": "rectify.data.keyword_scorer.KeywordScorer"}
ARTICLES = {"_target_": "rectify.data.keyword_scorer.KeywordScorer", "words": ["the", "a"]}  # build_scorer keeps `name` for the registry


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_reduces_the_members_scores(reduce):
    ens = build_scorer({"name": "ensemble", "members": [KEYWORD, ARTICLES], "reduce": reduce, "batch_size": 3})
    both = np.stack([KeywordScorer()(TEXTS), KeywordScorer(["the", "a"])(TEXTS)])
    np.testing.assert_allclose(ens(TEXTS), getattr(np, reduce)(both, axis=0))
    assert ens.name == f"{reduce}(keyword,keyword)"


def test_members_by_name_and_bad_configs():
    ens = EnsembleScorer(["profanity_svm", KEYWORD])
    assert ens.name == "max(profanity_svm,keyword)"
    assert ens(TEXTS)[0] >= KeywordScorer()(TEXTS)[0]
    with pytest.raises(ValueError, match="reduce"):
        EnsembleScorer([KEYWORD], reduce="median")
    with pytest.raises(ValueError, match="at least one"):
        EnsembleScorer([])
