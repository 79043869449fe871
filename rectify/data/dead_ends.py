"""Where a toxic continuation becomes a dead end: the first word after which the labeller already calls it toxic.

The paper's MDP has one terminal reward, on the whole continuation, so every token of a toxic trajectory
(including the ordinary words written after the insult) is regressed on -1, and Q_D learns mostly *which
states* are risky. Ending the episode at the word that makes the text toxic instead puts the -1 on the action
that caused it, with nothing after it: a per-token training signal from the same labeller and the same samples
(``build.assemble.truncate: dead_end``). The labeller scores word prefixes of the continuation alone, as the
labels stage scores whole continuations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_WORD = re.compile(r"\S+")


def word_prefix_ends(text: str) -> list[int]:
    """Character offsets just after each word of ``text``: the candidate cut points."""
    return [m.end() for m in _WORD.finditer(text)]


def dead_end_cuts(texts: Sequence[str], scorer: Callable[[Sequence[str]], Any], threshold: float) -> list[int]:
    """For each text, the length of its shortest word prefix scored ``>= threshold`` (the whole text if none is).

    All prefixes of all texts go to the scorer in one call, so batching and the progress bar are the scorer's.
    """
    ends = [word_prefix_ends(t) for t in texts]
    prefixes = [t[:e] for t, es in zip(texts, ends, strict=True) for e in es]
    scores = np.asarray(scorer(prefixes), dtype=np.float64) if prefixes else np.empty(0)
    if len(scores) != len(prefixes):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(prefixes)} prefixes")
    cuts, pos = [], 0
    for text, es in zip(texts, ends, strict=True):
        hits = np.flatnonzero(scores[pos: pos + len(es)] >= threshold)
        cuts.append(es[hits[0]] if len(hits) else len(text))
        pos += len(es)
    return cuts


def mark_dead_ends(records: Sequence[dict[str, Any]], scorer: Callable[[Sequence[str]], Any],
                   threshold: float) -> tuple[list[dict[str, Any]], int]:
    """Copies of ``records`` where every toxic generation (``toxicity >= threshold``) gains ``dead_end``: the
    character length of the prefix that ends its episode. Returns the records and how many were marked."""
    where = [(i, j) for i, r in enumerate(records) for j, g in enumerate(r["generations"])
             if g.get("toxicity", 0.0) >= threshold]
    cuts = dead_end_cuts([records[i]["generations"][j]["text"] for i, j in where], scorer, threshold)
    out = [{**r, "generations": [dict(g) for g in r["generations"]]} for r in records]
    for (i, j), cut in zip(where, cuts, strict=True):
        out[i]["generations"][j]["dead_end"] = int(cut)
    return out, len(where)
