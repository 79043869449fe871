"""``hf_classifier``: any transformers sequence classifier, from the Hub or a local dir, as a toxicity judge.

The online judge for after Perspective closes: public toxicity classifiers on the Hub differ only in their
head (one softmax over exclusive classes, or independent sigmoids over Jigsaw-style labels) and in which
label means "toxic", so both are read from the config (``configs/scorer/hf_classifier.yaml`` and its
presets) instead of one class per model. ``reward_model`` (our own fine-tuned classifier) is this scorer
with a local-dir check.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rectify.hub import hub_load_kwargs
from rectify.lm import LMLoadError, with_pad_token
from rectify.scoring.base import Scorer, _check_texts, torch_threads

ACTIVATIONS = ("auto", "softmax", "sigmoid")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hub_load_error(name: str, exc: Exception) -> LMLoadError:
    """The error of :func:`rectify.lm.load_lm` for a model that is neither on disk nor reachable."""
    return LMLoadError(
        f"could not load {name!r} from the Hugging Face Hub or a local dir ({type(exc).__name__}: {exc}).\n"
        "This machine may be offline. The offline scorers ship on PyPI: scorer=jigsaw_lstm, hatesonar, "
        "profanity_svm (or reward_model after scripts/train_reward_model.py); or pass "
        "scorer.name_or_path=<a local save_pretrained dir>."
    )


def resolve_label(label: str | int, id2label: dict[int, str]) -> int:
    """Index of ``label``: an index, or a label name (exact, then case-insensitive) from the model config."""
    n = len(id2label)
    if isinstance(label, int) or (isinstance(label, str) and label.lstrip("-").isdigit()):
        index = int(label)
        if not -n <= index < n:
            raise ValueError(f"label index {index} out of range for a classifier with {n} labels")
        return index % n
    names = {str(v): int(k) for k, v in id2label.items()}
    if label in names:
        return names[label]
    folded = {k.lower(): v for k, v in names.items()}
    if label.lower() in folded:
        return folded[label.lower()]
    raise ValueError(f"label {label!r} not among the classifier's labels {sorted(names, key=names.get)}; "
                     "set scorer.label to one of them or to an index")


class HFClassifierScorer(Scorer):
    """P(label) from a sequence classifier: ``softmax(logits)[label]`` or ``sigmoid(logits)[label]``.

    ``activation="auto"`` uses sigmoid when the model config says ``problem_type:
    multi_label_classification`` and softmax otherwise. ``scores_all`` returns every label.
    """

    name = "hf_classifier"

    def __init__(self, name_or_path: str, label: str | int = "toxic", activation: str = "auto",
                 max_length: int = 512, batch_size: int = 32, device: str = "cpu", dtype: str = "float32",
                 num_threads: int | None = None, trust_remote_code: bool = False, progress: bool | None = None):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=512)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; use one of {ACTIVATIONS}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}; use one of {sorted(DTYPES)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer, self.model = self._load(str(name_or_path), DTYPES[dtype], trust_remote_code)
        self.model = self.model.to(device).eval()
        config = self.model.config
        if config.pad_token_id is None:  # decoder classifiers (GPT-2) batch with pad = EOS, read at the last real token
            config.pad_token_id = self.tokenizer.pad_token_id
        if activation == "auto":
            activation = "sigmoid" if config.problem_type == "multi_label_classification" else "softmax"
        self.activation = activation
        id2label = {int(k): str(v) for k, v in config.id2label.items()}
        self.labels = tuple(id2label[i] for i in range(len(id2label)))
        self.label_index = resolve_label(label, id2label)
        self.label = self.labels[self.label_index]
        self.name = Path(str(name_or_path)).name or self.name
        self.max_length = int(max_length)
        self.device = device
        self.num_threads = num_threads

    @staticmethod
    def _load(name_or_path: str, dtype: torch.dtype, trust_remote_code: bool):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            hub = hub_load_kwargs(name_or_path)  # offline: the local cache only, at once
            tokenizer = with_pad_token(AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                                                     **hub))
            model = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, dtype=dtype, trust_remote_code=trust_remote_code, **hub)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types here
            raise hub_load_error(name_or_path, exc) from exc
        return tokenizer, model

    # batches are formed over length-sorted texts so little padding is computed; results come in input order
    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        by_length, order = _by_length(texts)
        return _unsort(super().__call__(by_length), order)

    def scores_all(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        by_length, order = _by_length(texts)
        return {lab: _unsort(scores, order) for lab, scores in super().scores_all(by_length).items()}

    def _score_batch_all(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch_threads(self.num_threads), torch.inference_mode():
            logits = self.model(**enc).logits.float()
        probs = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=-1)
        return probs.cpu().double().numpy()

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        return self._score_batch_all(texts)[:, self.label_index]


def _by_length(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    texts = _check_texts(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    return [texts[i] for i in order], order


def _unsort(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out
