"""Keras text tokenizers read from their pickles without Keras, and without trusting the pickle.

The shipped classifiers store a ``keras.preprocessing.text.Tokenizer`` (tox-block wraps it in its own
``TokenSequencer``) as a pickle. Unpickling runs whatever callables the file names, so we use a
restricted unpickler: it resolves only an exact allow-list of names, maps the Keras/tox-block classes to
plain stand-ins defined here, and refuses everything else with :class:`UnsafePickleError`.

The stand-in reproduces Keras' ``texts_to_sequences`` and ``pad_sequences`` (defaults: pad and truncate at
the front, value 0) exactly, since the LSTM weights were trained on those ids.
"""

from __future__ import annotations

import builtins
import collections
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

KERAS_DEFAULT_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a class or function outside the allow-list."""


class KerasTokenizer:
    """Plain stand-in for Keras' ``Tokenizer``: holds its pickled state, reimplements encoding."""

    # Keras' own defaults, used when an (older) pickle lacks an attribute.
    num_words: int | None = None
    filters: str = KERAS_DEFAULT_FILTERS
    lower: bool = True
    split: str = " "
    char_level: bool = False
    oov_token: str | None = None
    analyzer: Any = None
    word_index: dict[str, int]

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.analyzer is not None:
            raise UnsafePickleError("tokenizer uses a custom analyzer, which cannot be reproduced safely")
        if self.char_level:
            raise ValueError("char-level Keras tokenizers are not supported")
        self._table = str.maketrans({c: self.split for c in self.filters})

    def words(self, text: str) -> list[str]:
        """Keras ``text_to_word_sequence``: lower, map every filter char to the separator, split, drop empties."""
        if self.lower:
            text = text.lower()
        return [w for w in text.translate(self._table).split(self.split) if w]

    def text_to_sequence(self, text: str) -> list[int]:
        """Keras ``texts_to_sequences`` for one text: ids >= num_words become OOV (or are dropped)."""
        oov = self.word_index.get(self.oov_token) if self.oov_token is not None else None
        limit = self.num_words
        seq: list[int] = []
        for w in self.words(text):
            i = self.word_index.get(w)
            if i is not None and (not limit or i < limit):
                seq.append(i)
            elif oov is not None:
                seq.append(oov)
        return seq

    def texts_to_sequences(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.text_to_sequence(t) for t in texts]


class TokenSequencer:
    """Stand-in for tox-block's ``TokenSequencer`` (a scikit-learn transformer around a Keras tokenizer)."""

    max_features: int
    max_sequence_length: int
    tokenizer: KerasTokenizer

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def pad_sequences(seqs: Sequence[Sequence[int]], maxlen: int, padding: str = "pre",
                  truncating: str = "pre", value: int = 0) -> np.ndarray:
    """Keras ``pad_sequences`` with its defaults: keep the *last* ``maxlen`` ids, left-pad with ``value``."""
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError("padding and truncating must be 'pre' or 'post'")
    out = np.full((len(seqs), maxlen), value, dtype=np.int64)
    for row, s in enumerate(seqs):
        if not len(s):
            continue
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if padding == "pre":
            out[row, maxlen - len(s):] = s
        else:
            out[row, : len(s)] = s
    return out


# Exact (module, name) pairs a tokenizer pickle may name. Nothing else resolves.
ALLOWED: dict[tuple[str, str], Any] = {
    ("keras_preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("keras.preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("keras.src.preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("keras.src.legacy.preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("tensorflow.keras.preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("tensorflow.python.keras.preprocessing.text", "Tokenizer"): KerasTokenizer,
    ("tox_block.data_processing.preprocessors", "TokenSequencer"): TokenSequencer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "int"): builtins.int,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names in ``allowed`` (default :data:`ALLOWED`)."""

    def __init__(self, file, *, allowed: dict[tuple[str, str], Any] | None = None, source: str = "<pickle>"):
        super().__init__(file)
        self._allowed = ALLOWED if allowed is None else allowed
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load {module}.{name}: not in the tokenizer allow-list"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: persistent ids are not allowed")


def load_keras_tokenizer(path: str | Path) -> tuple[KerasTokenizer, int | None]:
    """Load a Keras tokenizer pickle (bare, or wrapped in tox-block's TokenSequencer) safely.

    Returns the tokenizer and, when the pickle records one, the sequence length the model was trained with.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        obj = RestrictedUnpickler(fh, source=str(path)).load()
    if isinstance(obj, TokenSequencer):
        return obj.tokenizer, int(obj.max_sequence_length)
    if isinstance(obj, KerasTokenizer):
        return obj, None
    raise ValueError(f"{path}: expected a Keras Tokenizer or TokenSequencer, got {type(obj).__name__}")
