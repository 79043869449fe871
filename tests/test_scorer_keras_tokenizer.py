"""The restricted unpickler and the Keras preprocessing stand-ins."""

from __future__ import annotations

import collections
import io
import os
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rectify.scoring.keras_tokenizer import (
    KerasTokenizer,
    RestrictedUnpickler,
    UnsafePickleError,
    load_keras_tokenizer,
    pad_sequences,
)


class _CallsSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


def _load(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data)).load()


@pytest.mark.parametrize("payload", [_CallsSystem(), _CallsEval(), collections.Counter("ab"), np.zeros(2)])
def test_refuses_any_other_class(payload):
    with pytest.raises(UnsafePickleError, match="refusing"):
        _load(pickle.dumps(payload))


def _fake_keras_pickle(state: dict, protocol: int = 3) -> bytes:
    """A pickle naming keras_preprocessing.text.Tokenizer, built without Keras."""
    tok = KerasTokenizer.__new__(KerasTokenizer)
    tok.__dict__.update(state)
    data = pickle.dumps(tok, protocol=protocol)
    return data.replace(b"rectify.scoring.keras_tokenizer\nKerasTokenizer\n", b"keras_preprocessing.text\nTokenizer\n")


STATE = {
    "num_words": 4, "filters": '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n', "lower": True, "split": " ",
    "char_level": False, "oov_token": None,
    "word_index": collections.OrderedDict([("you", 1), ("are", 2), ("nice", 3), ("rare", 4)]),
    "word_docs": collections.defaultdict(int, {"you": 1}),
}


def test_loads_allowed_classes_and_encodes_like_keras(tmp_path):
    data = _fake_keras_pickle(STATE)
    assert b"keras_preprocessing.text\nTokenizer" in data
    path = tmp_path / "tok.pickle"
    path.write_bytes(data)
    tok, maxlen = load_keras_tokenizer(path)
    assert maxlen is None
    # lower-cased, punctuation split, unknown dropped, ids >= num_words dropped (no oov_token)
    assert tok.texts_to_sequences(["You,are NICE!! rare zebra"]) == [[1, 2, 3]]


def test_oov_token_replaces_unknown_and_rare():
    tok = KerasTokenizer.__new__(KerasTokenizer)
    tok.__setstate__({**STATE, "oov_token": "<unk>", "word_index": {"<unk>": 1, "you": 2, "are": 3, "rare": 9}})
    assert tok.text_to_sequence("you are rare zebra") == [2, 3, 1, 1]


def test_refuses_a_tokenizer_with_custom_analyzer():
    with pytest.raises(UnsafePickleError):
        _load(_fake_keras_pickle({**STATE, "analyzer": 3}))


def test_the_shipped_pickles_name_only_allowed_classes():
    """Both real tokenizer pickles load through the restricted unpickler."""
    from rectify import assets

    tok, maxlen = load_keras_tokenizer(assets.asset_path("tox_block", "encoder_0.1.2.pkl"))
    assert maxlen == 100 and tok.num_words == 20000 and tok.oov_token is None


@given(st.lists(st.lists(st.integers(1, 50), max_size=12), max_size=6), st.integers(1, 8))
def test_pad_sequences_keeps_the_tail_left_padded(seqs, maxlen):
    out = pad_sequences(seqs, maxlen)
    assert out.shape == (len(seqs), maxlen)
    for row, s in zip(out, seqs, strict=True):
        kept = s[-maxlen:]
        assert list(row[maxlen - len(kept):]) == kept
        assert not row[: maxlen - len(kept)].any()


@given(st.text(max_size=40))
def test_words_never_contain_filters_or_separator(text):
    tok = KerasTokenizer.__new__(KerasTokenizer)
    tok.__setstate__(dict(STATE))
    for w in tok.words(text):
        assert w and " " not in w and not set(w) & set(STATE["filters"])
        assert w == w.lower()
