"""Value-data JSON lines -> tokenized, dynamically padded batches for Q_D training.

Each line is ``{"text": prompt + continuation, "reward": [r], "prompt_len": int (optional), "prompt_chars": int
(optional)}``. ``prompt_chars`` (the prompt's length in characters) lets the datamodule count the prompt's tokens
with Q_D's own tokenizer, whichever tokenizer counted ``prompt_len`` when the data was built. Bad lines fail
early with ``file:line`` (or are skipped and counted with ``skip_bad_lines``), never deep inside collate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from rectify.data.jsonl import numbered_lines, parse_object
from rectify.errors import InputError
from rectify.evaluation.perplexity import continuation_flags, prompt_length

log = logging.getLogger(__name__)


class ValueDataError(InputError, ValueError):
    """A value-data line is unusable; the message starts with ``file:line``."""


@dataclass
class ValueRecord:
    text: str
    reward: float
    prompt_len: int | None
    where: str  # "file:line", for error messages downstream
    prompt_chars: int | None = None  # the prompt's length in characters: prompt_len is recounted from it


def _check(record: dict[str, Any], where: str, q_min: float, q_max: float) -> ValueRecord:
    for key in ("text", "reward"):
        if key not in record:
            raise ValueDataError(f"{where}: missing field {key!r}")
    text = record["text"]
    if not isinstance(text, str) or not text.strip():
        raise ValueDataError(f"{where}: 'text' must be a non-empty string")
    reward = record["reward"]
    if isinstance(reward, list):
        if len(reward) != 1:
            raise ValueDataError(f"{where}: 'reward' must be [r] with one terminal reward, got {len(reward)} values")
        reward = reward[0]
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise ValueDataError(f"{where}: 'reward' must be a finite number, got {reward!r}")
    if not q_min <= reward <= q_max:
        raise ValueDataError(f"{where}: reward {reward} is outside [q_min, q_max] = [{q_min}, {q_max}]")
    prompt_len = record.get("prompt_len")
    if prompt_len is not None and (isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or prompt_len < 0):
        raise ValueDataError(f"{where}: 'prompt_len' must be a non-negative integer, got {prompt_len!r}")
    chars = record.get("prompt_chars")
    if chars is not None and (isinstance(chars, bool) or not isinstance(chars, int) or not 0 <= chars <= len(text)):
        raise ValueDataError(f"{where}: 'prompt_chars' must be an integer from 0 to the text's {len(text)} "
                             f"characters, got {chars!r}")
    return ValueRecord(text, float(reward), prompt_len, where, chars)


class MissingValueData(InputError, FileNotFoundError):
    """A value-data file named in the config does not exist."""


def require_value_data(*paths: str | Path | None) -> None:
    """Fail on a missing value-data file; train.py asks before loading any model (a Hub backbone offline spends
    half a minute on retries before its own error)."""
    for path in paths:
        if path is None or not Path(path).is_file():
            raise MissingValueData(f"value data file {path} does not exist (build it with scripts/build_data.py; "
                                   "train.py also takes synthetic_data.enabled=true or debug=smoke for a tiny "
                                   "generated set)")


def read_value_jsonl(path: str | Path, q_min: float = -1.0, q_max: float = 0.0,
                     skip_bad_lines: bool = False) -> tuple[list[ValueRecord], int]:
    """Parse and validate a value-data file; returns ``(records, skipped)``."""
    path = Path(path)
    require_value_data(path)
    records: list[ValueRecord] = []
    skipped = 0

    def skip(exc: ValueError) -> None:
        nonlocal skipped
        skipped += 1
        log.warning("skipping %s", exc)

    # numbered_lines hands skip() the lines that are not UTF-8 (with skip_bad_lines), or raises on them
    for _, where, line in numbered_lines(path, ValueDataError, skip if skip_bad_lines else None):
        try:
            records.append(_check(parse_object(line, where, ValueDataError), where, q_min, q_max))
        except ValueDataError as exc:
            if not skip_bad_lines:
                raise
            skip(exc)
    if skipped:
        log.warning("%s: skipped %d bad lines (data.skip_bad_lines=true)", path, skipped)
    return records, skipped


class TokenizedValueDataset(Dataset):
    """Token ids + reward (+ prompt length) per trajectory, tokenized once up front."""

    def __init__(self, records: list[ValueRecord], tokenizer, max_length: int, add_special_tokens: bool = True,
                 skip_bad_lines: bool = False):
        # add_special_tokens=True is the tokenizer's default call: what the generator sees at decoding time
        # and how the data pipeline counts prompt_len (BOS for Gemma, nothing for GPT-2 / SmolLM2).
        self.items: list[dict[str, Any]] = []
        self.skipped = 0
        if not records:
            return
        recount = getattr(tokenizer, "is_fast", False) and any(r.prompt_chars is not None for r in records)
        enc = tokenizer([r.text for r in records], add_special_tokens=add_special_tokens, truncation=True,
                        max_length=max_length, return_offsets_mapping=recount)
        offsets = enc["offset_mapping"] if recount else [None] * len(records)
        special = set(tokenizer.all_special_ids)
        self.recounted = self.differed = 0
        for rec, ids, offs in zip(records, enc["input_ids"], offsets, strict=True):
            if offs is not None and rec.prompt_chars is not None:
                n = prompt_length(continuation_flags(ids, offs, rec.prompt_chars, special))  # as the pipeline counts
                self.recounted += 1
                self.differed += rec.prompt_len is not None and rec.prompt_len != n
                rec = dataclasses.replace(rec, prompt_len=n)
            if len(ids) < 2:  # one token = a state without an action: nothing to learn
                err = ValueDataError(f"{rec.where}: text has {len(ids)} token(s); a trajectory needs at least 2")
                if not skip_bad_lines:
                    raise err
                self.skipped += 1
                log.warning("skipping %s", err)
                continue
            if rec.prompt_len is not None and rec.prompt_len > len(ids) and len(ids) < max_length:
                # not an error: a word merging across the prompt's end can shift a count by a token, but a
                # prompt longer than its whole text leaves this row nothing to learn as a continuation
                log.warning("%s: prompt_len %d is more than the text's %d tokens (%s's tokenizer): is it a "
                            "character count, or another tokenizer's?", rec.where, rec.prompt_len, len(ids),
                            getattr(tokenizer, "name_or_path", "Q_D"))
            self.items.append({"input_ids": list(ids), "reward": rec.reward, "prompt_len": rec.prompt_len})
        if self.differed:
            log.warning("%d of %d rows: the file's prompt_len differs from the prompt's tokens under %s; counted "
                        "from prompt_chars with this tokenizer (the data was built for another one?)",
                        self.differed, self.recounted, getattr(tokenizer, "name_or_path", "Q_D's tokenizer"))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def prompt_groups(items: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of ``items`` grouped by prompt, groups in order of first appearance.

    A prompt is the first ``prompt_len`` token ids of a row (as the datamodule tokenized them), so all the
    trajectories sampled from one prompt share a group; a row without ``prompt_len`` is a group of its own.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, it in enumerate(items):
        pl = it["prompt_len"]
        key: tuple[Any, ...] = ("prompt", *it["input_ids"][:pl]) if pl is not None else ("row", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def check_train_fraction(fraction: Any) -> float:
    """``data.train_fraction`` as a float in (0, 1]; anything else is a clear error."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.train_fraction must be a number in (0, 1] (the share of training prompts to keep), "
                         f"got {fraction!r}")
    return float(fraction)


def subset_by_prompt(items: list[dict[str, Any]], fraction: float,
                     seed: int = 0) -> tuple[list[dict[str, Any]], int, int]:
    """Keep a seeded random ``fraction`` of the prompts of ``items``, each with all its trajectories.

    For learning curves (is data still Q_D's bottleneck?). By prompt, not by row: the trajectories of one
    prompt are strongly correlated, so a row subset would keep nearly every prompt with fewer samples each
    and measure samples per prompt, not the amount of data. Seeded, so every DDP rank keeps the same subset;
    kept rows stay in their original order. ``fraction == 1`` returns ``items`` itself. Returns
    ``(kept items, kept prompts, all prompts)``.
    """
    fraction = check_train_fraction(fraction)
    groups = prompt_groups(items)
    if fraction == 1.0:
        return items, len(groups), len(groups)
    n_keep = min(len(groups), max(1, round(fraction * len(groups))))
    kept = random.Random(seed).sample(range(len(groups)), n_keep)
    keep = sorted(i for g in kept for i in groups[g])
    return [items[i] for i in keep], n_keep, len(groups)


class ValueCollator:
    """Right-pad to the longest sequence of the batch; the attention mask (not a pad id) marks padding."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor | None]:
        T = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), T), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), T), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
        batch: dict[str, torch.Tensor | None] = {
            "input_ids": ids, "attention_mask": mask,
            "reward": torch.tensor([it["reward"] for it in items], dtype=torch.float32),
        }
        if all("lower" in it for it in items):  # cached frozen-layer features [T_i, H], padded like the ids
            H = items[0]["lower"].shape[-1]
            lower = torch.zeros((len(items), T, H), dtype=items[0]["lower"].dtype)
            for i, it in enumerate(items):
                lower[i, : it["lower"].shape[0]] = it["lower"]
            batch["lower"] = lower
        lens = [it["prompt_len"] for it in items]
        batch["prompt_len"] = torch.tensor(lens, dtype=torch.long) if all(x is not None for x in lens) else None
        return batch


class ValueDataModule(L.LightningDataModule):
    """Train/val value data for :class:`~rectify.training.module.ValueLightningModule`."""

    def __init__(self, tokenizer, train_path: str, val_path: str, batch_size: int = 64,
                 eval_batch_size: int | None = None, max_length: int = 128, num_workers: int = 0,
                 skip_bad_lines: bool = False, add_special_tokens: bool = True, q_min: float = -1.0, q_max: float = 0.0,
                 shuffle: bool = True, train_fraction: float = 1.0, subset_seed: int = 0, **unused: Any):
        super().__init__()
        if unused:
            log.debug("ValueDataModule ignores config keys %s", sorted(unused))
        self.tokenizer = tokenizer
        self.train_path, self.val_path = train_path, val_path
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length
        self.num_workers = num_workers
        self.skip_bad_lines = skip_bad_lines
        self.add_special_tokens = add_special_tokens
        self.q_min, self.q_max = q_min, q_max
        self.shuffle = shuffle
        # learning curves: train on a seeded share of the training prompts (validation is never subset)
        self.train_fraction = check_train_fraction(train_fraction)
        self.subset_seed = int(subset_seed)
        self.subset_stats: dict[str, int] = {}
        self.collate = ValueCollator(tokenizer.pad_token_id)
        self.train_set: TokenizedValueDataset | None = None
        self.val_set: TokenizedValueDataset | None = None
        self.skipped = 0

    def _load(self, path: str) -> TokenizedValueDataset:
        records, skipped = read_value_jsonl(path, self.q_min, self.q_max, self.skip_bad_lines)
        ds = TokenizedValueDataset(records, self.tokenizer, self.max_length, self.add_special_tokens,
                                   self.skip_bad_lines)
        self.skipped += skipped + ds.skipped
        if ds.skipped:  # too short once tokenized: after the reader's own count, so say the file's total
            log.warning("%s: skipped %d lines in all (%d unreadable, %d too short for a trajectory)", path,
                        skipped + ds.skipped, skipped, ds.skipped)
        if len(ds) == 0:
            raise ValueDataError(f"{path}: no usable lines")
        log.info("%s: %d trajectories, %d ending in a dead end", path, len(ds), self._toxic(ds.items))
        return ds

    def _toxic(self, items: list[dict[str, Any]]) -> int:
        return sum(it["reward"] < (self.q_min + self.q_max) / 2 for it in items)

    def _subset_train(self, ds: TokenizedValueDataset) -> None:
        """Apply ``train_fraction`` (by prompt, seeded) in place and log what was kept."""
        rows_total = len(ds.items)
        ds.items, prompts, prompts_total = subset_by_prompt(ds.items, self.train_fraction, self.subset_seed)
        self.subset_stats = {"prompts": prompts, "prompts_total": prompts_total, "rows": len(ds.items),
                             "rows_total": rows_total, "toxic": self._toxic(ds.items)}
        st = self.subset_stats
        # one line, parsed by rectify.analysis.learning_curve
        log.info("train subset (train_fraction=%g, subset_seed=%d): kept %d of %d prompts, %d of %d rows, "
                 "%d toxic", self.train_fraction, self.subset_seed, st["prompts"], st["prompts_total"], st["rows"],
                 st["rows_total"], st["toxic"])

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = self._load(self.train_path)
            self._subset_train(self.train_set)
        if self.val_set is None and stage in (None, "fit", "validate"):
            self.val_set = self._load(self.val_path)

    def _loader(self, ds, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collate,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, False)
