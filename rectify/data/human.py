"""Human-written continuations as extra trajectories: the rest of each training prompt's source comment.

A training prompt is the first half of a labelled comment (``split_mode: midpoint``); the second half is how
a person continued it. Adding it as one more trajectory of that prompt costs no generation, and the insults
data's toxic comments give Q_D dead ends written by people, which LM samples of a 135M model rarely contain
(about 8% of them are toxic). It is labelled by the same labeller as the LM's samples (not by the data set's
own label, so the value data keeps one definition of toxic) and, with ``truncate: dead_end``, cut at its
onset like them. Marked ``"human": true`` so the summary can count them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def add_human_continuations(records: Sequence[dict[str, Any]], prompts: Sequence[dict[str, Any]],
                            scorer: Callable[[Sequence[str]], Any]) -> tuple[list[dict[str, Any]], int]:
    """Copies of labelled ``records`` with each prompt's human continuation appended to its generations.

    ``prompts`` are the prompts stage's records (``prompt_index`` of a labelled record indexes them); prompts
    without a non-empty ``continuation`` get nothing. Returns the records and how many were added.
    """
    where, texts = [], []
    for i, rec in enumerate(records):
        j = rec.get("prompt_index", i)
        if not 0 <= j < len(prompts):
            raise ValueError(f"labelled record {i} has prompt_index {j}, outside the {len(prompts)} prompts")
        text = ((prompts[j].get("continuation") or {}).get("text") or "")
        if text.strip():
            where.append(i)
            texts.append(text)
    scores = np.asarray(scorer(texts), dtype=np.float64) if texts else np.empty(0)
    if len(scores) != len(texts):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(texts)} human continuations")
    out = [{**r, "generations": list(r["generations"])} for r in records]
    for i, text, score in zip(where, texts, scores, strict=True):
        out[i]["generations"].append({"text": text, "toxicity": float(score), "human": True})
    return out, len(where)
