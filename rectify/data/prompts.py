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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rectify.data import sources
from rectify.data.jsonl import JSONLAppender, resume_records
from rectify.data.prompt_files import iter_prompt_file
from rectify.errors import InputError

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


Cut = Callable[[str], tuple[str, str] | str]  # (prompt, continuation), or the counts key of why not


def _from_labelled(rows: Sequence[sources.LabelledText], cut: Cut, counts: Counter[str]) -> list[Candidate]:
    out = []
    for row in rows:
        parts = cut(row.text)
        if isinstance(parts, str):
            counts[parts] += 1
        elif not parts[0].strip():
            counts["blank_prompt"] += 1
        else:
            out.append(Candidate(text=parts[0], continuation=parts[1], label=row.label, source=row.source))
    return out


def _toxicity(value: Any, where: str) -> float | None:
    """``prompt.toxicity`` of an rtp_jsonl line: a number or null (absent); anything else names the line."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise ValueError(f'{where}: "toxicity" must be a number (a score in [0, 1]) or null, got {value!r}; fix the line '
                     "or drop the field (the prompt is then judged by the scorer)")


def _from_rtp(path: Path, *, threshold: float, counts: Counter[str]) -> list[Candidate]:
    """Prompts of a RealToxicityPrompts-style JSONL (``prompt.text``, optional ``prompt.toxicity``), or any
    shape generate.py reads (:func:`rectify.data.prompt_files.iter_prompt_file`); ``source`` is the real line."""
    out = []
    for line, rec in iter_prompt_file(path):
        counts["read"] += 1
        tox = _toxicity(rec["prompt"].get("toxicity"), line.where)
        cont = rec.get("continuation")
        out.append(Candidate(
            text=rec["prompt"]["text"],
            continuation=cont.get("text") if isinstance(cont, dict) else None,
            label=None if tox is None else int(tox >= threshold),
            source=f"{path.name}:{line.number}",
            source_toxicity=tox,
        ))
    return out


def _cutter(cfg: Any, tokenizer: Any) -> Cut:
    """The configured ``split_mode`` as a cut that says which config key rejected a text."""
    mode = cfg["split_mode"]
    if mode == "midpoint":
        def cut(t: str) -> tuple[str, str] | str:
            parts = split_midpoint(t, min_words=cfg["min_words"], max_words=cfg["max_words"])
            if parts is None:  # count words only for rejected texts
                return "min_words" if len(t.split()) < max(2, cfg["min_words"]) else "max_words"
            return parts
        return cut
    if mode == "first_tokens":
        if tokenizer is None:
            raise ValueError("split_mode=first_tokens needs the generator's tokenizer")

        def cut_tokens(t: str) -> tuple[str, str] | str:
            return split_first_tokens(t, tokenizer, cfg["prompt_tokens"]) or "prompt_tokens"
        return cut_tokens
    raise ValueError(f"unknown prompts.split_mode {mode!r}; use midpoint or first_tokens")


def load_candidates(cfg: Any, split: str, tokenizer: Any = None, counts: Counter[str] | None = None) -> list[Candidate]:
    """Candidate prompts of one split (``train`` or ``eval``) of the configured source, in file order.

    ``counts`` (if given) gets the rows ``read`` and how many each filter dropped (see :func:`why_none`)."""
    kind = cfg["source"]
    cut = _cutter(cfg, tokenizer)
    counts = Counter() if counts is None else counts
    if kind == "insults":
        return _from_labelled(sources.read_insults(cfg["insults_splits"][split], counts=counts), cut, counts)
    path = cfg["paths"][split]
    if path is None:
        return []
    if kind == "jigsaw_csv":
        rows = sources.read_labelled_csv(path, text_column=cfg["text_column"], label_column=cfg["label_column"],
                                         threshold=cfg["threshold"], counts=counts)
        return _from_labelled(rows, cut, counts)
    if kind == "rtp_jsonl":
        return _from_rtp(Path(path), threshold=cfg["threshold"], counts=counts)
    raise ValueError(f"unknown prompts.source {kind!r}; use insults, jigsaw_csv or rtp_jsonl")


class NoPromptsError(InputError, ValueError):
    """No training prompt survived reading and filtering; the message says what dropped them."""


# counts key -> why a row was dropped, naming the config key that decides it
_DROPPED = {
    "unlabelled": "had an empty label (build.prompts.label_column={label_column}; null reads unlabelled prompts)",
    "no_text": "had no text (build.prompts.text_column={text_column})",
    "min_words": "had fewer than build.prompts.min_words={min_words} words",
    "max_words": "had more than build.prompts.max_words={max_words} words",
    "prompt_tokens": "were not longer than build.prompts.prompt_tokens={prompt_tokens} tokens",
    "blank_prompt": "gave a blank prompt",
    "drop_nontoxic": "were non-toxic and dropped (build.prompts.drop_nontoxic={drop_nontoxic})",
    "max_prompts": "were over build.prompts.max_prompts={max_prompts}",
}


def why_none(cfg: Any, split: str, counts: Counter[str]) -> str:
    """Why a split has no prompts, in words: rows read and what each filter dropped, with the config keys."""
    if cfg["source"] == "insults":
        where = f"the insults {cfg['insults_splits'][split]!r} split"
    elif cfg["paths"][split] is None:
        return f"build.prompts.paths.{split} is null (it names the file for jigsaw_csv / rtp_jsonl)"
    else:
        where = f"{cfg['paths'][split]} (build.prompts.paths.{split})"
    if not counts["read"]:
        return f"{where} holds no data rows (an empty file, or a header only)"
    values = {k: "null" if v is None else v for k, v in cfg.items()}
    dropped = [f"{counts[key]} {why.format_map(values)}" for key, why in _DROPPED.items() if counts[key]]
    return f"{where}: read {counts['read']} rows" + (", of which " + "; ".join(dropped) + " (change those keys)"
                                                     if dropped else "")


def dropped_after_scoring(counts: Counter[str], n_candidates: int, n_written: int, max_prompts: int | None) -> None:
    """Count the candidates :func:`write_prompts` left out when it wrote none (the drop rule or a zero cap)."""
    if n_written == 0 and n_candidates:
        counts["max_prompts" if max_prompts == 0 else "drop_nontoxic"] += n_candidates


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
