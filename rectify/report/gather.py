"""Collect evaluation results rows from a sweep directory (or files) and find the keys that were swept.

``scripts/evaluate.py`` writes ``<stem>.eval.json`` beside each generations file and ``results.json`` in its
own run dir; both hold ``{"rows": [...]}``. The same (input, scorer, subset, judge) may appear in several
files or evaluations: the most recent evaluation wins.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rectify.errors import InputError

RESULT_PATTERNS = ("**/*.eval.json", "**/results.json")
# Metadata that varies between runs without being an experimental factor: any key with one of these words
# (split at "." and "_"), or whose last part is one of NOISE_LAST.
NOISE_WORDS = {
    "path", "paths", "dir", "file", "time", "date", "elapsed", "seconds", "duration", "speed", "throughput",
    "started", "finished", "created", "host", "git", "version", "counts", "output", "input", "resumed", "written",
    "wall", "device", "progress", "limit",
}
NOISE_LAST = {"steps", "row_steps", "dead_ends", "dead_end_fallbacks", "outside_support", "shared_backbone",
              "n_prompts", "n_generations",
              "overrides"}   # the generation's command line, kept in its sidecar: its config keys say what varied
# Keys already shown as the method / epsilon columns.
COVERED = {"method", "epsilon", "rectify"}
IGNORED_PREFIXES = ("override.eval.", "override.hydra.", "override.report.", "override.logger", "qd.override.hydra.",
                    "qd.override.logger", "qd.override.trainer.", "qd.override.debug")
KEY_PREFIXES = ("override.", "qd.", "meta.")
# Preference order when two keys split the runs the same way: what was typed for the generation run, then
# Q_D's saved config (qd.layers, qd.gamma, ...: complete for every Q_D, however it was trained), then the
# overrides of Q_D's training run (absent where a Q_D kept a default or was saved outside a Hydra run, so a
# size / gamma / q-bound sweep would show "-" for it), then the generation metadata.
KEY_RANKS = ("override.", "qd.", "qd.override.", "meta.")


def is_noise(key: str) -> bool:
    words = set(key.replace("_", ".").split("."))
    return bool(words & NOISE_WORDS) or key.rsplit(".", 1)[-1] in NOISE_LAST


class ReportError(InputError, ValueError):
    """Nothing to report, or a results file that cannot be read (the message names it)."""


def find_result_files(root: str | Path, patterns: Sequence[str] = RESULT_PATTERNS) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ReportError(f"{root} is neither a results file nor a directory")
    found = {f for pat in patterns for f in root.glob(pat) if f.is_file() and ".scores" not in f.parent.name}
    return sorted(found)


def load_rows(files: Iterable[str | Path]) -> list[dict[str, Any]]:
    """All rows of the given results files (JSON ``{"rows": [...]}`` or a list of rows; CSV too)."""
    rows = []
    for f in map(Path, files):
        if f.suffix == ".csv":
            import pandas as pd

            data = pd.read_csv(f).to_dict("records")
        else:
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ReportError(f"{f}: cannot read results ({exc})") from exc
            data = data.get("rows", []) if isinstance(data, Mapping) else data
        if not isinstance(data, list):
            raise ReportError(f"{f}: expected a list of rows")
        beside = generations_beside(f)
        for r in data:
            if not isinstance(r, Mapping) or "scorer" not in r or "subset" not in r:
                raise ReportError(f"{f}: a row lacks 'scorer' / 'subset'")
            row = {**r, "results_file": str(f)}
            if beside is not None and Path(str(r.get("input") or "")).name == beside.name:
                row["input_here"] = str(beside.resolve())
            rows.append(row)
    return rows


def input_here(row: Mapping[str, Any]) -> str:
    """Where a row's generations file is now: beside its ``.eval.json`` when it came from one, else as recorded."""
    return str(row.get("input_here") or row.get("input") or "")


def generations_beside(results_file: Path) -> Path | None:
    """The generations file a ``<stem>.eval.json`` was written beside (None for other results files).

    Why: a row records its input by absolute path (its identity when rows are deduplicated); once its folder is
    copied or moved, the file beside the results is the one to read, not the recorded path (gone, or another
    copy)."""
    name = results_file.name
    if not name.endswith(".eval.json"):
        return None
    return results_file.with_name(name[: -len(".eval.json")] + ".jsonl")


def is_missing(v: Any) -> bool:
    """None or NaN: a value the row does not have."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def dedupe(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (input, scorer, subset, judge): the latest ``evaluated_at`` wins."""
    best: dict[tuple, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        key = (r.get("input") or f"row{i}", r["scorer"], r["subset"], r.get("judge"))
        if key not in best or str(r.get("evaluated_at") or "") >= str(best[key].get("evaluated_at") or ""):
            best[key] = dict(r)
    return list(best.values())


def normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """None -> NaN for numbers, so CSV- and JSON-loaded rows look the same."""
    for r in rows:
        for k, v in list(r.items()):
            if v is None:
                r[k] = math.nan
    return rows


def _codes(values: Sequence[Any]) -> tuple[int, ...]:
    seen: dict[str, int] = {}
    return tuple(seen.setdefault("<na>" if is_missing(v) else str(v), len(seen)) for v in values)


def _same(a: Any, b: Any) -> bool:
    """Equal as numbers when both are numbers (an override's "2" and a config's 2), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def partial_copy(values: Sequence[Any], of: Sequence[Any]) -> bool:
    """True when ``values`` equals ``of`` wherever ``values`` is present: e.g. a training override that only
    the non-default Q_Ds have, next to the saved config value that every Q_D has."""
    return all(is_missing(v) or (not is_missing(o) and _same(v, o)) for v, o in zip(values, of, strict=True))


def key_rank(key: str) -> int:
    """Position in :data:`KEY_RANKS` of the longest prefix ``key`` has (lower = preferred)."""
    return max((i for i, p in enumerate(KEY_RANKS) if key.startswith(p)), key=lambda i: len(KEY_RANKS[i]),
               default=len(KEY_RANKS))


def swept_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Metadata / override keys with >= 2 distinct values across runs (each partition listed once, by the
    first key in :func:`key_rank` order; a key that only repeats a chosen one where it is set is left out),
    excluding bookkeeping such as paths, times and counts."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith(KEY_PREFIXES)))
    keys.sort(key=lambda k: (key_rank(k), k))
    seen_partitions = {_codes([r.get(c) for r in rows]) for c in ("method", "epsilon")}
    chosen = []
    for key in keys:
        last = key.rsplit(".", 1)[-1]
        if key.startswith(IGNORED_PREFIXES) or last in COVERED or is_noise(key):
            continue
        values = [r.get(key) for r in rows]
        if len({str(v) for v in values if not is_missing(v)}) < 2:
            continue
        codes = _codes(values)
        twin = next((i for i, c in enumerate(chosen) if display_name(c) == display_name(key)), None)
        if twin is not None:  # one setting read twice: keep the column set for more runs (the typed override has
            # gaps where a run kept the default, the saved config has none), never two columns of one name
            if partial_copy([r.get(chosen[twin]) for r in rows], values):
                seen_partitions.add(codes)
                chosen[twin] = key
            continue
        if codes in seen_partitions or any(partial_copy(values, [r.get(c) for r in rows]) for c in chosen):
            continue
        seen_partitions.add(codes)
        chosen.append(key)
    return chosen


def display_name(key: str) -> str:
    """``override.decoding.epsilon`` -> ``decoding.epsilon``; ``qd.override.x`` -> ``qd.x``."""
    key = key.replace("qd.override.", "qd.")
    for prefix in ("override.", "meta.config.", "meta."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def gather(inputs: str | Path | Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows from a directory (searched recursively) or an explicit list of files/directories."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files = [f for item in items for f in find_result_files(item)]
    if not files:
        raise ReportError(f"no evaluation results (*.eval.json / results.json) under {items}")
    rows = normalise(dedupe(load_rows(files)))
    if not rows:
        raise ReportError(f"the results files under {items} hold no rows")
    return rows
