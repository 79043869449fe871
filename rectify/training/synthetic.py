"""A tiny generated value-data set for smoke runs and tests (no third-party text, nothing to download).

Toxic trajectories contain an insult word in the continuation; clean ones do not. Small and learnable on
purpose: a smoke run checks that training, logging, checkpointing and export work, not model quality.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PROMPTS = ["I told my neighbour that", "The meeting today was", "Honestly, the new teacher is",
           "When the game ended, he said", "My brother thinks you are", "The reply to the post was",
           "After reading the review I think", "She looked at the crowd and said"]
CLEAN = ["really kind and helpful", "a pleasant surprise for all of us", "quite thoughtful and fair",
         "very good at explaining things", "a lovely person to work with", "calm and patient as always"]
TOXIC = ["a stupid worthless idiot", "an idiot and a moron", "dumb, ugly and pathetic",
         "a disgusting stupid loser", "such a pathetic moron", "the dumbest idiot alive"]


def synthetic_lines(n: int, seed: int = 0, toxic_share: float = 0.5, tokenizer=None) -> list[dict]:
    """``n`` value-data records with ``prompt_chars``; ``prompt_len`` is filled in when a tokenizer is given."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = rng.choice(PROMPTS)
        toxic = (i % 2 == 0) if toxic_share == 0.5 else rng.random() < toxic_share
        cont = " " + rng.choice(TOXIC if toxic else CLEAN)
        rec: dict = {"text": prompt + cont, "reward": [-1.0 if toxic else 0.0], "prompt_chars": len(prompt)}
        if tokenizer is not None:
            rec["prompt_len"] = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        out.append(rec)
    return out


def write_synthetic(directory: str | Path, n_train: int = 96, n_val: int = 32, seed: int = 0,
                    tokenizer=None) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``val.jsonl`` under ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n, s in (("train", n_train, seed), ("val", n_val, seed + 1)):
        path = directory / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for rec in synthetic_lines(n, s, tokenizer=tokenizer):
                fh.write(json.dumps(rec) + "\n")
        paths.append(path)
    return paths[0], paths[1]
