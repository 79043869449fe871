"""Split the held-out prompts into a dev half (every choice is made there) and a test half (reported once).

``prompts_eval.jsonl`` -> ``prompts_dev.jsonl`` + ``prompts_test.jsonl`` + ``eval_split.json``. The split is a
cheap deterministic function of the eval file and ``build.prompts.eval_split`` (seed, dev fraction,
stratification threshold), so it is not part of the prompts stage's fingerprint: data built before the split
existed keeps its prompts and gets the two halves on the next ``build_data.py`` run (or any
:func:`ensure_eval_split` call). Stratified by the prompt's own toxicity, so both halves hold the same share of
toxic prompts. Lines are copied verbatim and keep the eval file's (already seeded, shuffled) order, so the
first N of a half is a random subset of it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rectify.data.jsonl import parse_object, read_jsonl, write_json_atomic, write_jsonl_atomic

EVAL, DEV, TEST, RECORD = "prompts_eval.jsonl", "prompts_dev.jsonl", "prompts_test.jsonl", "eval_split.json"


@dataclass(frozen=True)
class SplitConfig:
    """``build.prompts.eval_split``: the share of prompts in dev, the seed of the draw, and the prompt
    toxicity (``prompt.toxicity``) at or above which a prompt is in the toxic stratum (None: no strata)."""

    dev_fraction: float = 0.5
    seed: int = 0
    stratify_threshold: float | None = 0.5

    @classmethod
    def from_any(cls, cfg: Mapping[str, Any] | None) -> SplitConfig:
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown prompts.eval_split keys {sorted(unknown)}")
        out = cls(**cfg)
        if not 0.0 < out.dev_fraction < 1.0:
            raise ValueError(f"prompts.eval_split.dev_fraction must be in (0, 1), got {out.dev_fraction}")
        return out


def stratum(record: Mapping[str, Any], threshold: float | None) -> str:
    """``toxic`` / ``nontoxic`` by the prompt's own score, ``unscored`` without one, ``all`` without strata."""
    if threshold is None:
        return "all"
    tox = (record.get("prompt") or {}).get("toxicity")
    if tox is None:
        return "unscored"
    return "toxic" if float(tox) >= threshold else "nontoxic"


def split_indices(records: Sequence[Mapping[str, Any]], cfg: SplitConfig) -> tuple[list[int], list[int]]:
    """(dev, test) line indices, each ascending: per stratum a seeded draw of ``round(fraction * n)`` for dev."""
    by_stratum: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_stratum.setdefault(stratum(rec, cfg.stratify_threshold), []).append(i)
    dev: list[int] = []
    for name in sorted(by_stratum):
        idx = list(by_stratum[name])
        random.Random(f"{cfg.seed}:eval_split:{name}").shuffle(idx)
        dev += idx[: round(cfg.dev_fraction * len(idx))]
    chosen = set(dev)
    return sorted(dev), [i for i in range(len(records)) if i not in chosen]


def _half(records: Sequence[Mapping[str, Any]], idx: Sequence[int], threshold: float | None) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for i in idx:
        s = stratum(records[i], threshold)
        counts[s] = counts.get(s, 0) + 1
    return {"n": len(idx), "strata": dict(sorted(counts.items())), "indices": list(idx),
            "ids": [records[i].get("source", f"{EVAL}:{i + 1}") for i in idx]}


def write_eval_split(data_dir: str | Path, cfg: SplitConfig | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write the two halves and their record from ``<data_dir>/prompts_eval.jsonl``; return the record."""
    cfg = cfg if isinstance(cfg, SplitConfig) else SplitConfig.from_any(cfg)
    d = Path(data_dir)
    raw = (d / EVAL).read_bytes()
    lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip()]
    records = [parse_object(ln, f"{d / EVAL}:{i + 1}") for i, ln in enumerate(lines)]
    dev, test = split_indices(records, cfg)
    for name, idx in ((DEV, dev), (TEST, test)):
        tmp = d / f".{name}.tmp"
        tmp.write_text("".join(lines[i] + "\n" for i in idx), encoding="utf-8")
        tmp.replace(d / name)
    record = {"source": EVAL, "source_sha256": hashlib.sha256(raw).hexdigest(), "n_prompts": len(records),
              **asdict(cfg), "index_meaning": f"0-based line number in {EVAL}; ids are each prompt's `source`",
              "dev": _half(records, dev, cfg.stratify_threshold),
              "test": _half(records, test, cfg.stratify_threshold)}
    write_json_atomic(d / RECORD, record)
    return record


def is_current(data_dir: str | Path, cfg: SplitConfig) -> bool:
    """True when both halves exist and the record matches this config and the eval file's bytes."""
    d = Path(data_dir)
    if not all((d / f).is_file() for f in (DEV, TEST, RECORD)):
        return False
    try:
        rec = json.loads((d / RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    same_cfg = all(rec.get(k) == v for k, v in asdict(cfg).items())
    return same_cfg and rec.get("source_sha256") == hashlib.sha256((d / EVAL).read_bytes()).hexdigest()


def ensure_eval_split(data_dir: str | Path, cfg: SplitConfig | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The split's record, (re)writing the halves only when missing or stale (another config or eval file)."""
    cfg = cfg if isinstance(cfg, SplitConfig) else SplitConfig.from_any(cfg)
    d = Path(data_dir)
    if is_current(d, cfg):
        return json.loads((d / RECORD).read_text(encoding="utf-8"))
    return write_eval_split(d, cfg)


def write_prompt_subset(src: str | Path, dst: str | Path, limit: int | None, subset: str,
                        threshold: float = 0.5) -> int:
    """The first ``limit`` prompts of ``src`` in one stratum (``all`` keeps every one), written to ``dst``.

    Why: the headline is stated on non-toxic prompts only, so generating k = 25 samples for the toxic ones too
    costs a third more for rows no number uses; seeds follow each prompt's place in the subset file.
    """
    if subset not in ("all", "nontoxic", "toxic"):
        raise ValueError(f"prompt subset must be all, nontoxic or toxic, got {subset!r}")
    rows = read_jsonl(src)[: None if limit is None else int(limit)]
    keep = [r for r in rows if subset == "all" or stratum(r, threshold) == subset]
    write_jsonl_atomic(dst, keep)
    return len(keep)


if __name__ == "__main__":  # python -m rectify.data.eval_split SRC DST SUBSET [LIMIT]: write_prompt_subset, for scripts
    import sys

    src, dst, subset, *rest = sys.argv[1:]
    limit = int(rest[0]) if rest and rest[0] != "null" else None
    n = write_prompt_subset(src, dst, limit, subset)
    print(f"{n} {subset} of the first {limit if limit is not None else 'all'} prompts of {src} -> {dst}")
