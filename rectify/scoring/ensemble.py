"""Several scorers as one labeller: a text is as toxic as the reduction (max or mean) of its members' scores.

A Q_D learns the notion of toxic of whatever labelled its training data. Classifiers trained on different
data disagree a lot (``scripts/analysis/scorer_agreement.py``), so a Q_D trained on one of them removes mostly what
that one flags. Labelling with ``max`` over several teaches Q_D to avoid what any of them flags; ``mean``
keeps only what they agree on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rectify.scoring.base import Scorer

REDUCERS = {"max": np.max, "mean": np.mean}


class EnsembleScorer(Scorer):
    """``reduce`` over ``members`` (scorer names or configs, as ``build_scorer`` takes them)."""

    def __init__(self, members: Sequence[str | Mapping[str, Any] | Scorer], reduce: str = "max",
                 batch_size: int = 8192, progress: bool | None = False):
        super().__init__(batch_size=batch_size, progress=progress)
        if reduce not in REDUCERS:
            raise ValueError(f"reduce must be one of {sorted(REDUCERS)}, got {reduce!r}")
        if not members:
            raise ValueError("an ensemble needs at least one member scorer")
        from rectify.scoring import build_scorer

        self.members = [build_scorer(m) for m in members]
        self.reduce = reduce
        self.name = f"{reduce}({','.join(m.name for m in self.members)})"

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        return REDUCERS[self.reduce](np.stack([m(texts) for m in self.members]), axis=0)
