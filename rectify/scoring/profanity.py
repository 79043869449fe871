"""``profanity_svm``: alt-profanity-check's calibrated linear SVM (a different model family and training set
than the Jigsaw LSTMs, so it is a fair independent judge)."""

from __future__ import annotations

import numpy as np

from rectify.scoring.base import Scorer


class ProfanitySVMScorer(Scorer):
    name = "profanity_svm"

    def __init__(self, batch_size: int = 4096, progress: bool | None = None):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=50_000)
        from profanity_check import predict_prob  # imported here: it unpickles its model at import

        self._predict_prob = predict_prob

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self._predict_prob(texts), dtype=np.float64)
