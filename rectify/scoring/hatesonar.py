"""``hatesonar``: HateSonar's ONNX TF-IDF + logistic regression (Davidson et al. tweets: hate / offensive /
neither). Score = 1 - P(neither).

The graph's ``StringNormalizer`` asks for the ``en_US.UTF-8`` locale, which minimal images lack, and
onnxruntime then refuses to build the session; we set each StringNormalizer's ``locale`` attribute to a
locale that always exists (``C.UTF-8``) on the in-memory ModelProto before creating the session. Lower-casing
of non-ASCII letters may differ from en_US; the features are ASCII word tokens (``[a-zA-Z0-9_]+``) anyway.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rectify import assets
from rectify.scoring.base import Scorer

HATESONAR_CLASSES = ("hate", "offensive", "neither")


def patch_string_normalizer_locale(model, locale: str) -> int:
    """Set ``locale`` on every StringNormalizer node of an ``onnx.ModelProto``; returns how many were set."""
    import onnx

    count = 0
    for node in model.graph.node:
        if node.op_type != "StringNormalizer":
            continue
        for attr in list(node.attribute):
            if attr.name == "locale":
                node.attribute.remove(attr)
        node.attribute.append(onnx.helper.make_attribute("locale", locale))
        count += 1
    return count


class HateSonarScorer(Scorer):
    name = "hatesonar"
    labels = HATESONAR_CLASSES

    def __init__(self, model_path: str | None = None, locale: str = "C.UTF-8", label: str = "not_neither",
                 batch_size: int = 1024, num_threads: int = 1, progress: bool | None = None):
        super().__init__(batch_size=batch_size, progress=progress, progress_min=20_000)
        import onnx
        import onnxruntime as ort

        if label not in ("not_neither", *HATESONAR_CLASSES):
            raise ValueError(f"label must be 'not_neither' or one of {HATESONAR_CLASSES}, got {label!r}")
        self.label = label
        path = Path(model_path) if model_path else assets.asset_path("hatesonar", "model.onnx")
        model = onnx.load(str(path))
        if patch_string_normalizer_locale(model, locale) == 0:
            raise ValueError(f"{path}: no StringNormalizer node; not the expected HateSonar graph")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def _score_batch_all(self, texts: list[str]) -> np.ndarray:
        arr = np.asarray(texts, dtype=object)
        _, probs = self._session.run(None, {self._input: arr})
        return np.array([[p[i] for i in range(len(HATESONAR_CLASSES))] for p in probs], dtype=np.float64)

    def _score_batch(self, texts: list[str]) -> np.ndarray:
        probs = self._score_batch_all(texts)
        if self.label == "not_neither":
            return 1.0 - probs[:, HATESONAR_CLASSES.index("neither")]
        return probs[:, HATESONAR_CLASSES.index(self.label)]
