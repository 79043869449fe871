"""Reproduce the Jigsaw LSTM reference scores with TensorFlow itself (one-off verification, not a dependency).

Run in a throwaway venv that has ``tensorflow-cpu tf-keras h5py`` (never the project's venv)::

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras
    /tmp/tfvenv/bin/python rectify/scoring/verify_tf.py texts.json tf_scores.json

then compare ``tf_scores.json`` with ``build_scorer("jigsaw_lstm").scores_all(texts)`` (and ``_tcc``).
tox-block's ``.h5`` is loaded with tf_keras (Keras 2: its ``hard_sigmoid`` is the one the model was trained
with); toxic-comment-classifier's weights with Keras 3 and the architecture of its ``model.py``. The original
pickles are loaded with the real Keras Tokenizer here, through stub modules for the tox-block package names:
this trusts the pickles, which is acceptable only for these sha256-verified files in a throwaway venv.
Run it as a file (not ``-m``): it imports nothing from ``rectify``, so it runs without torch.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import types
from pathlib import Path


def _asset(name: str, member: str) -> Path:
    root = Path(os.environ.get("RECTIFY_CACHE", Path.home() / ".cache" / "rectify"))
    return root / "assets" / name / member


def tox_block_tf(texts: list[str]) -> list[list[float]]:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tf_keras
    from tf_keras.preprocessing import sequence, text

    sys.modules.setdefault("keras_preprocessing", types.ModuleType("keras_preprocessing"))
    sys.modules["keras_preprocessing.text"] = text
    stub = types.ModuleType("tox_block.data_processing.preprocessors")
    stub.TokenSequencer = type("TokenSequencer", (), {})
    for name in ("tox_block", "tox_block.data_processing"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["tox_block.data_processing.preprocessors"] = stub
    with open(_asset("tox_block", "encoder_0.1.2.pkl"), "rb") as fh:
        ts = pickle.load(fh)
    ts.tokenizer.analyzer = None  # attribute added to Keras' Tokenizer after this pickle was written
    ids = sequence.pad_sequences(ts.tokenizer.texts_to_sequences(texts), maxlen=ts.max_sequence_length)
    model = tf_keras.models.load_model(str(_asset("tox_block", "lstm_model_0.1.2.h5")), compile=False)
    return model.predict(ids, verbose=0).tolist()


def toxic_comment_classifier_tf(texts: list[str]) -> list[list[float]]:
    import keras
    from keras.layers import LSTM, Bidirectional, Dense, Dropout, Embedding, GlobalMaxPooling1D, Input

    with open(_asset("toxic_comment_classifier", "tokenizer.pickle"), "rb") as fh:
        tok = pickle.load(fh)
    ids = keras.utils.pad_sequences(tok.texts_to_sequences(texts), maxlen=100)
    inp = Input(shape=(100,))
    x = Embedding(input_dim=20000, output_dim=50, trainable=False)(inp)
    x = Bidirectional(LSTM(50, return_sequences=True, dropout=0.1, recurrent_dropout=0.1))(x)
    x = Dense(50, activation="relu")(GlobalMaxPooling1D()(x))
    out = Dense(6, activation="sigmoid")(Dropout(0.1)(x))
    model = keras.Model(inp, out)
    model.load_weights(str(_asset("toxic_comment_classifier", "model.weights.h5")))
    return model.predict(ids, verbose=0).tolist()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python rectify/scoring/verify_tf.py TEXTS.json OUT.json")
    texts = json.loads(Path(argv[0]).read_text())
    result = {"jigsaw_lstm": tox_block_tf(texts), "jigsaw_lstm_tcc": toxic_comment_classifier_tf(texts)}
    Path(argv[1]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
