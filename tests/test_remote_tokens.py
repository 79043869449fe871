"""Token strings from an API -> Q_D ids: exact where possible, refused (and counted) where ambiguous."""

from __future__ import annotations

import pytest

from rectify.remote.tokens import TokenMapper, parse_bytes_token, token_bytes


@pytest.fixture(scope="module", params=["gpt2", "smollm2"])
def tok(request, gpt2_tok, smollm2_tok):
    return {"gpt2": gpt2_tok, "smollm2": smollm2_tok}[request.param]


@pytest.fixture(scope="module")
def mapper(tok):
    return TokenMapper(tok)


TEXT = "Hello naïve wörld — 東京 🙂 <tag>"


def test_token_bytes_are_exact(tok):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    table = token_bytes(tok)
    assert b"".join(table[i] for i in ids) == TEXT.encode("utf-8")
    assert table[tok.eos_token_id] == tok.eos_token.encode()


def test_every_spelling_maps_back(tok, mapper):
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    table = token_bytes(tok)
    for i in ids:
        assert mapper.lookup(f"token_id:{i}") == i
        vocab_string = tok.convert_ids_to_tokens(i)
        clash = mapper.by_text.get(vocab_string, [i]) != [i]  # e.g. raw "±" (byte 0xB1) = decoded text of C2 B1
        assert mapper.lookup(vocab_string) == (None if clash else i)
        raw = table[i]
        text = tok.decode([i])
        if "\ufffd" not in text:
            assert mapper.lookup(text) == i  # OpenAI's decoded text
        else:  # a partial UTF-8 character: OpenAI spells it as bytes
            assert mapper.lookup("bytes:" + "".join(f"\\x{b:02x}" for b in raw)) == i
    assert mapper.lookup(" the") == tok(" the", add_special_tokens=False)["input_ids"][0]


def test_unknown_and_ambiguous_are_refused_and_counted(tok, mapper):
    before = sum(mapper.refused.values())
    assert mapper.lookup("\ufffd") is None  # dozens of byte tokens decode to U+FFFD
    assert mapper.lookup("token_id:-1") is None and mapper.lookup(f"token_id:{len(tok)}") is None
    assert mapper.lookup("no such token, surely") is None
    # A raw vocabulary string that is also another token's decoded text (GPT-2: raw "±" is byte 0xB1, the
    # text "±" decodes from C2 B1): which one the server meant cannot be known.
    clash = next(s for s, i in mapper.by_vocab.items() if mapper.by_text.get(s, [i]) != [i])
    assert mapper.lookup(clash) is None
    assert sum(mapper.refused.values()) == before + 5


def test_parse_bytes_token():
    assert parse_bytes_token("bytes:\\xe2\\x80") == b"\xe2\x80"
    assert parse_bytes_token("bytes:\\xzz") is None and parse_bytes_token("abc") is None
