"""Token strings <-> ids: what an API returns must map to exactly one id of Q_D's vocabulary.

Servers spell tokens in one of three ways, all handled by :class:`TokenMapper`:

* ``"token_id:123"`` (vLLM's and this project's server's ``return_tokens_as_token_ids``): exact.
* the decoded text of the token (``" the"``; what api.openai.com returns), with ``"bytes:\\xe2\\x80"`` for a
  token that is not valid UTF-8 on its own. Decoded text is ambiguous for some tokens (several byte tokens
  decode to U+FFFD), so only a string that decodes from one id is accepted.
* the tokenizer's raw vocabulary string (``"Ġthe"``), accepted when it does not clash with a decoded text.

A string that fits none of these, or fits two different ids, is refused (``None``) and counted.
"""

from __future__ import annotations

import ast
import json
from collections import Counter, defaultdict
from functools import cache

from transformers import PreTrainedTokenizerBase

from rectify.lm import same_vocabulary


@cache
def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's scheme): char -> byte value."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in kept}
    extra = 0
    for b in range(256):
        if b not in kept:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return "ByteLevel" in json.dumps(json.loads(backend.to_str()).get("decoder"))


def token_bytes(tokenizer: PreTrainedTokenizerBase) -> list[bytes]:
    """The exact bytes every id stands for (added/special tokens: their UTF-8 text)."""
    vocab = tokenizer.get_vocab()
    strings = [""] * len(tokenizer)
    for s, i in vocab.items():
        if i < len(strings):
            strings[i] = s
    special = set(getattr(tokenizer, "added_tokens_encoder", {}))
    alphabet = _byte_alphabet() if _is_byte_level(tokenizer) else None
    out = []
    for s in strings:
        if s in special:
            out.append(s.encode("utf-8"))
        elif alphabet is not None and all(c in alphabet for c in s):
            out.append(bytes(alphabet[c] for c in s))
        elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"):  # SentencePiece byte fallback
            out.append(bytes([int(s[3:5], 16)]))
        else:
            out.append(s.replace("▁", " ").encode("utf-8"))
    return out


def parse_bytes_token(token: str) -> bytes | None:
    """``"bytes:\\xe2\\x80"`` (OpenAI's spelling of a partial UTF-8 token) -> the raw bytes."""
    if not token.startswith("bytes:"):
        return None
    try:
        value = ast.literal_eval("b'" + token[6:].replace("'", "\\'") + "'")
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, bytes) else None


class TokenMapper:
    """Map a server's token strings to ids of ``tokenizer`` exactly, or refuse (and count) them."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.vocab_size = len(tokenizer)
        self.by_vocab = {s: i for s, i in tokenizer.get_vocab().items() if i < self.vocab_size}
        self.by_text: dict[str, list[int]] = defaultdict(list)
        for i, text in enumerate(tokenizer.batch_decode([[i] for i in range(self.vocab_size)])):
            self.by_text[text].append(i)
        self.by_bytes: dict[bytes, list[int]] = defaultdict(list)
        for i, b in enumerate(token_bytes(tokenizer)):
            self.by_bytes[b].append(i)
        self.refused: Counter[str] = Counter()

    def lookup(self, token: str) -> int | None:
        """The one id ``token`` stands for, or ``None`` (unknown or ambiguous: counted in ``refused``)."""
        found = self._lookup(token)
        if found is None:
            self.refused[token] += 1
        return found

    def _lookup(self, token: str) -> int | None:
        if token.startswith("token_id:"):
            try:
                i = int(token[9:])
            except ValueError:
                return None
            return i if 0 <= i < self.vocab_size else None
        raw = parse_bytes_token(token)
        if raw is not None:
            ids = self.by_bytes.get(raw, [])
            return ids[0] if len(ids) == 1 else None
        vocab_id = self.by_vocab.get(token)
        text_ids = self.by_text.get(token, [])
        if vocab_id is None:
            return text_ids[0] if len(text_ids) == 1 else None
        return vocab_id if not text_ids or text_ids == [vocab_id] else None


_MAPPERS: dict[tuple, tuple[PreTrainedTokenizerBase, TokenMapper]] = {}


def mapper_for(tokenizer: PreTrainedTokenizerBase) -> TokenMapper:
    """A :class:`TokenMapper` per vocabulary, built once per process (decoding every id takes seconds)."""
    key = (type(tokenizer).__name__, str(tokenizer.name_or_path), len(tokenizer))
    cached = _MAPPERS.get(key)
    if cached is None or not (cached[0] is tokenizer or same_vocabulary(cached[0], tokenizer)):
        cached = _MAPPERS[key] = (tokenizer, TokenMapper(tokenizer))
    return cached[1]
