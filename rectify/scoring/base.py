"""The one interface every toxicity scorer implements.

Pipeline stages, evaluation and the AUC table only ever call ``scorer(texts) -> np.ndarray`` of P(toxic) in
[0, 1], so any scorer can label training data or judge generations. Batching and the progress bar live here
once, so each scorer only implements :meth:`Scorer._score_batch`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from tqdm.auto import tqdm


class Scorer(ABC):
    """Maps texts to P(toxic) in [0, 1].

    Subclasses set ``name`` and implement ``_score_batch``; multi-label ones also set ``labels``, implement
    ``_score_batch_all`` and pick the label that ``__call__`` returns with ``label``.
    """

    name: str = "scorer"
    labels: tuple[str, ...] = ()
    label: str | None = None

    def __init__(self, batch_size: int = 256, progress: bool | None = None, progress_min: int = 2048):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.progress = progress
        self.progress_min = int(progress_min)

    # -- public API ---------------------------------------------------------------------------------------
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """P(toxic) for each text, float64 array of the same length."""
        texts = _check_texts(texts)
        out = np.empty(len(texts), dtype=np.float64)
        for start, batch in self._batches(texts):
            out[start : start + len(batch)] = self._score_batch(batch)
        return np.clip(out, 0.0, 1.0)

    def scores_all(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every label's probability; single-label scorers return ``{name: scores}``."""
        if not self.labels:
            return {self.name: self(texts)}
        texts = _check_texts(texts)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        for start, batch in self._batches(texts):
            out[start : start + len(batch)] = self._score_batch_all(batch)
        out = np.clip(out, 0.0, 1.0)
        return {lab: out[:, i] for i, lab in enumerate(self.labels)}

    # -- for subclasses -----------------------------------------------------------------------------------
    @abstractmethod
    def _score_batch(self, texts: list[str]) -> np.ndarray:
        """P(toxic) for one batch."""

    def _score_batch_all(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - multi-label only
        raise NotImplementedError(f"{type(self).__name__} has no per-label scores")

    def _batches(self, texts: list[str]):
        show = self.progress if self.progress is not None else len(texts) >= self.progress_min
        starts = range(0, len(texts), self.batch_size)
        bar = tqdm(starts, desc=f"scoring ({self.name})", unit="batch", disable=not show, leave=False)
        for start in bar:
            yield start, texts[start : start + self.batch_size]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("a scorer takes a sequence of texts, not a single string; wrap it in a list")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text #{i} is {type(t).__name__}, not str")
    return texts


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads: the small LSTM scorers run fastest on one thread (thread
    hand-offs cost more than their tiny matmuls), and the caller's own setting must survive."""
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
