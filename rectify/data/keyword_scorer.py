"""A tiny keyword scorer with the Scorer interface, for ``debug=smoke`` runs and tests.

It is not a toxicity model: it only needs to be instant, deterministic and to rank an obvious insult
above a benign sentence, so the pipeline's plumbing can be exercised without loading a classifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

DEFAULT_WORDS = ("idiot", "stupid", "moron", "dumb", "fool", "hate", "shut", "loser", "fuck", "shit", "ass")


class KeywordScorer:
    """P(toxic) = 1 - 0.5 ** (number of listed words in the text)."""

    def __init__(self, words: Sequence[str] = DEFAULT_WORDS, name: str = "keyword") -> None:
        self.name = name
        self._pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\w*", re.IGNORECASE)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        hits = np.array([len(self._pattern.findall(t)) for t in texts], dtype=np.float64)
        return 1.0 - 0.5**hits
