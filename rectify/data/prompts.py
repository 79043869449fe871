"""Stage 1: prompts, each with its own toxicity score and the ``file:line`` it came from.

Two ways to cut a prompt out of a human comment:

* ``midpoint`` (RealToxicityPrompts): comments of ``min_words``..``max_words`` words are split at the word
  midpoint; the first half is the prompt, the second half (with its leading space) the human continuation.
* ``first_tokens`` (the original paper's Jigsaw prompts): the first ``prompt_tokens`` tokens of a comment
  that is longer than that, decoded back to text.

Train and evaluation prompts come from disjoint source splits (insults ``train.csv`` vs
``test_with_solutions.csv``, or two configured files) so evaluation never sees a training comment.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rectify.data import sources
from rectify.data.jsonl import JSONLAppender, iter_jsonl, resume_records

log = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Candidate:
    """A prompt before scoring: its text, the human continuation (if any), label and origin."""

    text: str
    continuation: str | None
    label: int | None
    source: str
    source_toxicity: float | None = None


def split_midpoint(text: str, *, min_words: int = 8, max_words: int = 60) -> tuple[str, str] | None:
    """Split ``text`` at its word midpoint: ``(prompt, continuation)``, or None outside the length range.

    The prompt holds the first ``n // 2`` words with the original spacing inside; the continuation starts
    with the whitespace that followed them, so ``prompt + continuation == text`` (after stripping).
    """
    text = text.strip()
    words = list(_WORD.finditer(text))
    n = len(words)
    if n < max(2, min_words) or n > max_words:
        return None
    cut = words[n // 2 - 1].end()
    return text[:cut], text[cut:]


def split_first_tokens(text: str, tokenizer: Any, n_tokens: int) -> tuple[str, str] | None:
    """First ``n_tokens`` tokens of ``text`` as the prompt (the original's Jigsaw prompts), or None if shorter."""
    ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"]
    if len(ids) <= n_tokens:
        return None
    prompt = tokenizer.decode(ids[:n_tokens], skip_special_tokens=True)
    rest = tokenizer.decode(ids[n_tokens:], skip_special_tokens=True)
    return prompt, rest


def _from_labelled(rows: Sequence[sources.LabelledText], cut: Callable[[str], tuple[str, str] | None]) -> list[Candidate]:
    out = []
    for row in rows:
        parts = cut(row.text)
        if parts is not None and parts[0].strip():
            out.append(Candidate(text=parts[0], continuation=parts[1], label=row.label, source=row.source))
    return out


def _from_rtp(path: Path, *, threshold: float) -> list[Candidate]:
    """Prompts of a RealToxicityPrompts-style JSONL (``prompt.text``, optional ``prompt.toxicity``)."""
    out = []
    for lineno, rec in enumerate(iter_jsonl(path), start=1):
        prompt = rec.get("prompt")
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise ValueError(f"{path}:{lineno}: expected {{'prompt': {{'text': ...}}}}")
        tox = prompt.get("toxicity")
        cont = rec.get("continuation")
        out.append(Candidate(
            text=prompt["text"],
            continuation=cont.get("text") if isinstance(cont, dict) else None,
            label=None if tox is None else int(tox >= threshold),
            source=f"{path.name}:{lineno}",
            source_toxicity=tox,
        ))
    return out


def load_candidates(cfg: Any, split: str, tokenizer: Any = None) -> list[Candidate]:
    """Candidate prompts of one split (``train`` or ``eval``) of the configured source, in file order."""
    kind = cfg["source"]
    mode = cfg["split_mode"]
    if mode == "midpoint":
        def cut(t: str):
            return split_midpoint(t, min_words=cfg["min_words"], max_words=cfg["max_words"])
    elif mode == "first_tokens":
        if tokenizer is None:
            raise ValueError("split_mode=first_tokens needs the generator's tokenizer")

        def cut(t: str):
            return split_first_tokens(t, tokenizer, cfg["prompt_tokens"])
    else:
        raise ValueError(f"unknown prompts.split_mode {mode!r}; use midpoint or first_tokens")

    if kind == "insults":
        return _from_labelled(sources.read_insults(cfg["insults_splits"][split]), cut)
    path = cfg["paths"][split]
    if path is None:
        return []
    if kind == "jigsaw_csv":
        rows = sources.read_labelled_csv(path, text_column=cfg["text_column"], label_column=cfg["label_column"],
                                         threshold=cfg["threshold"])
        return _from_labelled(rows, cut)
    if kind == "rtp_jsonl":
        return _from_rtp(Path(path), threshold=cfg["threshold"])
    raise ValueError(f"unknown prompts.source {kind!r}; use insults, jigsaw_csv or rtp_jsonl")


def shuffled(candidates: list[Candidate], seed: int, split: str) -> list[Candidate]:
    """A seeded permutation, so ``max_prompts`` takes a random subset and resumes see the same order."""
    order = list(candidates)
    random.Random(f"{seed}:order:{split}").shuffle(order)
    return order


def is_toxic(label: int | None, score: float, *, toxic_by: str, threshold: float) -> bool:
    """Whether a prompt counts as toxic for the drop rule: by its human ``label``, its ``score``, or ``either``."""
    by_score = score >= threshold
    by_label = bool(label) if label is not None else by_score
    if toxic_by == "score":
        return by_score
    if toxic_by == "label":
        return by_label
    if toxic_by == "either":
        return by_score or by_label
    raise ValueError(f"unknown prompts.toxic_by {toxic_by!r}; use label, score or either")


def keep_prompt(source: str, toxic: bool, drop_rate: float, seed: int) -> bool:
    """Drop a share ``drop_rate`` of non-toxic prompts; the coin depends only on (seed, source)."""
    if toxic or drop_rate <= 0:
        return True
    return random.Random(f"{seed}:drop:{source}").random() >= drop_rate


def write_prompts(
    candidates: Sequence[Candidate],
    out_path: str | Path,
    scorer: Callable[[Sequence[str]], Any],
    *,
    split: str,
    drop_nontoxic: float,
    toxic_by: str,
    threshold: float,
    max_prompts: int | None,
    seed: int,
    batch_size: int = 256,
) -> int:
    """Score, filter and append prompt records; resumes after the last complete line. Returns the count.

    Each line: ``{"prompt": {"text", "toxicity"}, "continuation": {"text"}, "source": "file:line",
    "split", "label", "index"}`` where ``index`` is the candidate's position, used to resume.
    """
    done = resume_records(out_path)
    n_written = len(done)
    start = done[-1]["index"] + 1 if done else 0
    limit = max_prompts if max_prompts is not None else len(candidates)
    bar = tqdm(total=min(limit, len(candidates)), initial=n_written, desc=f"prompts[{split}]", unit="prompt")
    with JSONLAppender(out_path) as out:
        pos = start
        while pos < len(candidates) and n_written < limit:
            chunk = candidates[pos:pos + batch_size]
            scores = scorer([c.text for c in chunk])
            for offset, (cand, score) in enumerate(zip(chunk, scores, strict=True)):
                score = float(score)
                toxic = is_toxic(cand.label, score, toxic_by=toxic_by, threshold=threshold)
                if split == "train" and not keep_prompt(cand.source, toxic, drop_nontoxic, seed):
                    continue
                record: dict[str, Any] = {"prompt": {"text": cand.text, "toxicity": score}}
                if cand.continuation is not None:
                    record["continuation"] = {"text": cand.continuation}
                record.update(source=cand.source, split=split, label=cand.label, index=pos + offset)
                if cand.source_toxicity is not None:
                    record["source_toxicity"] = cand.source_toxicity
                out.append(record)
                n_written += 1
                bar.update(1)
                if n_written >= limit:
                    break
            pos += len(chunk)
    bar.close()
    return n_written
