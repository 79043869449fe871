"""Jigsaw Bi-LSTM scorers: tox-block (``jigsaw_lstm``) and toxic-comment-classifier (``jigsaw_lstm_tcc``).

Both are the paper's kind of reward model (a Jigsaw-trained classifier, 6 labels) and run offline from their
PyPI wheels. Preprocessing follows each package exactly: Keras tokenizer ids (first ``num_words``), then
``pad_sequences(maxlen=100)`` (keep the last 100 ids, left-pad with 0). Neither package cleans the text before
tokenizing at prediction time (tox-block's stop-word remover is off by default).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rectify import assets
from rectify.scoring.base import Scorer, torch_threads
from rectify.scoring.keras_lstm import BiLSTMClassifier, load_keras2_h5, load_keras3_weights_h5
from rectify.scoring.keras_tokenizer import load_keras_tokenizer, pad_sequences

JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
# tox-block's optional min-max rescaling per label (config.RESCALE_PROBA); off by default.
TOX_BLOCK_RESCALE = {
    "toxic": (0.002116, 0.999858),
    "severe_toxic": (0.000011, 0.648682),
    "obscene": (0.000347, 0.997533),
    "threat": (0.000040, 0.918887),
    "insult": (0.000373, 0.986303),
    "identity_hate": (0.000074, 0.901117),
}


class JigsawLSTMScorer(Scorer):
    """A Keras Bi-LSTM Jigsaw classifier in PyTorch; ``__call__`` returns the ``label`` column
    (``"toxic"`` by default, ``"max"`` for the max over labels, ``"mean"`` for their mean)."""

    labels = JIGSAW_LABELS

    def __init__(
        self,
        model: BiLSTMClassifier,
        tokenizer,
        *,
        name: str,
        label: str = "toxic",
        maxlen: int = 100,
        rescale: dict[str, tuple[float, float]] | None = None,
        batch_size: int = 256,
        num_threads: int | None = 1,
        progress: bool | None = None,
    ):
        super().__init__(batch_size=batch_size, progress=progress)
        if label not in (*self.labels, "max", "mean"):
            raise ValueError(f"label must be one of {self.labels} or 'max'/'mean', got {label!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.label = label
        self.maxlen = int(maxlen)
        self.rescale = rescale
        self.num_threads = num_threads

    def encode(self, texts: list[str]) -> np.ndarray:
        """Keras ids, padded/truncated exactly as the original packages do."""
        return pad_sequences(self.tokenizer.texts_to_sequences(texts), self.maxlen)

    def _score_batch_all(self, texts: list[str]) -> np.ndarray:
        ids = torch.from_numpy(self.encode(texts))
        with torch_threads(self.num_threads), torch.inference_mode():
            probs = self.model(ids).double().numpy()
        if self.rescale:
            for j, lab in enumerate(self.labels):
                lo, hi = self.rescale[lab]
                probs[:, j] = np.abs((probs[:, j] - lo) / (hi - lo))
        return probs

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        probs = self._score_batch_all(texts)
        if self.label == "max":
            return probs.max(axis=1)
        if self.label == "mean":
            return probs.mean(axis=1)
        return probs[:, self.labels.index(self.label)]


def tox_block_scorer(
    label: str = "toxic",
    rescale: bool = False,
    model_path: str | None = None,
    tokenizer_path: str | None = None,
    batch_size: int = 256,
    num_threads: int | None = 1,
    progress: bool | None = None,
) -> JigsawLSTMScorer:
    """tox-block 0.1.2 (Jigsaw, 223k comments). Paths default to the verified PyPI asset."""
    model_path = Path(model_path) if model_path else assets.asset_path("tox_block", "lstm_model_0.1.2.h5")
    tokenizer_path = Path(tokenizer_path) if tokenizer_path else assets.asset_path("tox_block", "encoder_0.1.2.pkl")
    tokenizer, maxlen = load_keras_tokenizer(tokenizer_path)
    model = BiLSTMClassifier(load_keras2_h5(model_path))
    _check_vocab(tokenizer, model, tokenizer_path)
    return JigsawLSTMScorer(model, tokenizer, name="jigsaw_lstm", label=label, maxlen=maxlen or 100,
                            rescale=TOX_BLOCK_RESCALE if rescale else None, batch_size=batch_size,
                            num_threads=num_threads, progress=progress)


def toxic_comment_classifier_scorer(
    label: str = "toxic",
    model_path: str | None = None,
    tokenizer_path: str | None = None,
    maxlen: int = 100,
    batch_size: int = 256,
    num_threads: int | None = 1,
    progress: bool | None = None,
) -> JigsawLSTMScorer:
    """toxic-comment-classifier 0.3.0 (Keras 3 weights; its ``predict`` averages the 6 labels: ``label=mean``)."""
    asset = "toxic_comment_classifier"
    model_path = Path(model_path) if model_path else assets.asset_path(asset, "model.weights.h5")
    tokenizer_path = Path(tokenizer_path) if tokenizer_path else assets.asset_path(asset, "tokenizer.pickle")
    tokenizer, _ = load_keras_tokenizer(tokenizer_path)
    model = BiLSTMClassifier(load_keras3_weights_h5(model_path))
    _check_vocab(tokenizer, model, tokenizer_path)
    return JigsawLSTMScorer(model, tokenizer, name="jigsaw_lstm_tcc", label=label, maxlen=maxlen,
                            batch_size=batch_size, num_threads=num_threads, progress=progress)


def _check_vocab(tokenizer, model: BiLSTMClassifier, path: Path) -> None:
    if not tokenizer.num_words or tokenizer.num_words > model.vocab_size:
        raise ValueError(f"{path}: tokenizer num_words={tokenizer.num_words} exceeds the embedding's "
                         f"{model.vocab_size} rows")
