"""Stage 3: score every continuation (its text alone, as the original did) with the configured scorer.

Appends one labelled record per prompt (each generation gains ``"toxicity"``, the record gains
``"labeller"``); a restart continues after the last complete record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rectify.data.jsonl import JSONLAppender, count_complete, iter_jsonl


def label_records(records: Sequence[dict[str, Any]], scorer: Callable[[Sequence[str]], Any],
                  name: str) -> list[dict[str, Any]]:
    """Copies of ``records`` with a ``toxicity`` on every generation, scored in one batch."""
    texts = [g["text"] for r in records for g in r["generations"]]
    scores = [float(s) for s in scorer(texts)] if texts else []
    if len(scores) != len(texts):
        raise RuntimeError(f"scorer {name!r} returned {len(scores)} scores for {len(texts)} texts")
    out, pos = [], 0
    for r in records:
        gens = []
        for g in r["generations"]:
            gens.append({**g, "toxicity": scores[pos]})
            pos += 1
        out.append({**r, "generations": gens, "labeller": name})
    return out


def label_file(in_path: str | Path, out_path: str | Path, scorer: Callable[[Sequence[str]], Any], *,
               name: str, batch_prompts: int = 128) -> int:
    """Label every record of ``in_path`` into ``out_path``, resuming; returns the number of records."""
    done = count_complete(out_path)
    batch: list[dict[str, Any]] = []
    total = done
    with JSONLAppender(out_path) as out, tqdm(desc="labels", unit="prompt", initial=done) as bar:
        for i, rec in enumerate(iter_jsonl(in_path)):
            if i < done:
                continue
            batch.append(rec)
            if len(batch) >= batch_prompts:
                out.extend(label_records(batch, scorer, name))
                total += len(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            out.extend(label_records(batch, scorer, name))
            total += len(batch)
            bar.update(len(batch))
    return total
