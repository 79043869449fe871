"""Stage 4: turn labelled continuations into the value-model data, with the original's rules.

Per prompt, ``mode`` picks the trajectories: ``most`` keeps the most and the least toxic continuation,
``sample`` keeps ``k`` random ones, ``all`` keeps every one. A share ``drop_clean`` of prompts whose
continuations are all clean (every score < threshold) is dropped, which is how the original fought the
class imbalance. Reward: -1 if the continuation's score >= threshold else 0 (``reward: soft`` gives
-score instead). The 9:1 train/val split is by *prompt*, so no prompt's continuations leak across.
Each row: ``{"text": prompt + continuation, "reward": [r], "prompt_len": n, "prompt_chars": c}`` with ``n`` the
text's tokens (``qd_tokenizer``) inside the prompt and ``c`` the prompt's characters. With ``truncate: dead_end`` a toxic continuation ends at its ``dead_end``
mark (:mod:`rectify.data.dead_ends`): the episode stops at the word that made it toxic.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TRUNCATE_MODES = (None, "dead_end")


@dataclass
class AssembleConfig:
    """Mirrors ``build.assemble`` in the config."""

    mode: str = "all"  # most | sample | all
    k: int = 2  # for mode=sample
    drop_clean: float = 0.0
    threshold: float = 0.5
    reward: str = "binary"  # binary (-1 / 0, the paper) | soft (-score)
    val_fraction: float = 0.1
    seed: int = 0
    skip_empty: bool = True
    truncate: str | None = None  # None (the paper: whole continuations) | dead_end (end toxic ones at the onset)

    def __post_init__(self) -> None:
        if self.truncate not in TRUNCATE_MODES:
            raise ValueError(f"unknown assemble.truncate {self.truncate!r}; use null or dead_end")


def select(gens: Sequence[dict[str, Any]], mode: str, k: int, rng: random.Random) -> list[dict[str, Any]]:
    """The continuations of one prompt that become trajectories."""
    if mode == "all":
        return list(gens)
    if mode == "most":
        if len(gens) <= 1:
            return list(gens)
        ranked = sorted(range(len(gens)), key=lambda i: gens[i]["toxicity"])
        lo, hi = ranked[0], ranked[-1]
        return [gens[hi], gens[lo]]
    if mode == "sample":
        return [gens[i] for i in sorted(rng.sample(range(len(gens)), min(k, len(gens))))]
    raise ValueError(f"unknown assemble.mode {mode!r}; use most, sample or all")


def reward_of(score: float, threshold: float, kind: str) -> float | int:
    if kind == "binary":
        return -1 if score >= threshold else 0
    if kind == "soft":
        return -float(score)
    raise ValueError(f"unknown assemble.reward {kind!r}; use binary or soft")


def split_prompts(keys: Sequence[Any], val_fraction: float, seed: int) -> set[int]:
    """Positions of the prompts (by key) that go to validation: a seeded ``val_fraction`` share, >= 1 when there
    are >= 2. A prompt's side depends on its key and the seed only through a hash rank, so builds of the same
    prompts that keep different subsets (the clean-prompt drop depends on the sampled labels) or use another
    dtype, k or labeller validate on the same prompts, and none of them trains on another's validation prompts."""
    n = len(keys)
    if n < 2 or val_fraction <= 0:
        return set()
    n_val = min(n - 1, max(1, round(n * val_fraction)))

    def rank(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:split:{keys[i]}".encode()).digest()

    return set(sorted(range(n), key=rank)[:n_val])


def assemble(records: Sequence[dict[str, Any]], cfg: AssembleConfig,
             prompt_len_of: Any) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Return ``(train_rows, val_rows, summary)``; ``prompt_len_of(prompts, texts) -> list[int]`` counts each
    row's prompt tokens in its text (:func:`token_counter`)."""
    # The split is drawn over every record before the drop, so it does not depend on the sampled labels.
    keys = [rec.get("source", pos) for pos, rec in enumerate(records)]
    val_pos = split_prompts(keys, cfg.val_fraction, cfg.seed)
    kept: list[tuple[dict, list[dict]]] = []
    kept_val: list[bool] = []
    kept_keys: list[Any] = []
    dropped_clean = empty = 0
    for pos, rec in enumerate(records):
        gens = rec["generations"]
        if cfg.skip_empty:
            n_before = len(gens)
            gens = [g for g in gens if g["text"].strip()]
            empty += n_before - len(gens)
        if not gens:
            continue
        if any("toxicity" not in g for g in gens):
            raise ValueError(f"record {pos} ({rec.get('source')}) has unlabelled generations: run stage=labels")
        key = rec.get("source", pos)
        rng = random.Random(f"{cfg.seed}:{key}")
        if all(g["toxicity"] < cfg.threshold for g in gens) and rng.random() < cfg.drop_clean:
            dropped_clean += 1
            continue
        kept.append((rec, select(gens, cfg.mode, cfg.k, rng)))
        kept_val.append(pos in val_pos)
        kept_keys.append(keys[pos])

    val_ids = {j for j, v in enumerate(kept_val) if v}
    if len(kept) >= 2 and cfg.val_fraction > 0 and len(val_ids) in (0, len(kept)):
        # the drop left one side empty (tiny data): split the kept prompts themselves
        val_ids = split_prompts(kept_keys, cfg.val_fraction, cfg.seed)
    train: list[dict] = []
    val: list[dict] = []
    n_tox = {"train": 0, "val": 0}
    cut_chars = {"before": 0, "after": 0}  # characters of the toxic continuations, before / after truncation
    prompt_of: list[tuple[str, dict]] = []  # (prompt, row): prompt_len is counted in the row's own text
    for j, (rec, chosen) in enumerate(kept):
        part = "val" if j in val_ids else "train"
        rows = val if part == "val" else train
        prompt = rec["prompt"]["text"]
        for g in chosen:
            toxic = g["toxicity"] >= cfg.threshold
            n_tox[part] += toxic
            text = g["text"]
            if cfg.truncate == "dead_end" and toxic:
                if "dead_end" not in g:
                    raise ValueError(f"record {j} ({rec.get('source')}): a toxic generation has no dead_end "
                                     "mark (see rectify.data.dead_ends.mark_dead_ends)")
                cut_chars["before"] += len(text)
                text = text[: g["dead_end"]]
                cut_chars["after"] += len(text)
            rows.append({"text": prompt + text, "reward": [reward_of(g["toxicity"], cfg.threshold, cfg.reward)]})
            prompt_of.append((prompt, rows[-1]))
    lens = prompt_len_of([p for p, _ in prompt_of], [row["text"] for _, row in prompt_of]) if prompt_of else []
    for (prompt, row), n_tok in zip(prompt_of, lens, strict=True):
        row["prompt_len"] = int(n_tok)
        row["prompt_chars"] = len(prompt)  # Q_D training recounts prompt_len with its own tokenizer from this

    n_tox_train, n_tox_val = int(n_tox["train"]), int(n_tox["val"])
    summary = {
        "prompts_in": len(records),
        "prompts_dropped_clean": dropped_clean,
        "prompts_kept": len(kept),
        "prompts_train": len(kept) - len(val_ids),
        "prompts_val": len(val_ids),
        "empty_continuations_skipped": empty,
        "rows_train": len(train),
        "rows_val": len(val),
        "toxic_train": n_tox_train,
        "toxic_val": n_tox_val,
        "toxic_share_train": n_tox_train / len(train) if train else math.nan,
        "toxic_share_val": n_tox_val / len(val) if val else math.nan,
        "mode": cfg.mode,
        "threshold": cfg.threshold,
        "reward": cfg.reward,
        "truncate": cfg.truncate,
    }
    if cfg.truncate == "dead_end":
        summary["toxic_chars_kept"] = cut_chars["after"] / cut_chars["before"] if cut_chars["before"] else math.nan
    return train, val, summary


def token_counter(tokenizer: Any):
    """``prompt_len_of`` for a HF tokenizer: how many leading tokens of the row's text (the tokenizer's default
    call, special tokens included, e.g. Gemma's ``<bos>``; as a DataModule sees it) are the prompt's. A token that
    spans the prompt's end (BPE merges ``"a "`` + ``"jerk"`` into ``" jerk"``) is the continuation's first action,
    as the fluency judge counts it (:func:`rectify.evaluation.perplexity.encode_continuation`)."""
    from rectify.evaluation.perplexity import encode_continuation, prompt_length

    def count(prompts: list[str], texts: list[str]) -> list[int]:
        return [prompt_length(encode_continuation(tokenizer, prompt, text[len(prompt):])[1])
                for prompt, text in zip(prompts, texts, strict=True)]

    return count
