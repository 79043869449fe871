"""A small per-text score cache stored next to the evaluated file, so a rerun only scores new texts.

One JSON file per (input, scorer): ``{"config": <fingerprint of the scorer config>, "values": {key: value}}``.
Keys are texts (or prompt + NUL + continuation for the judge); a changed scorer config invalidates the file.
Writes are atomic (temp file + rename), so a killed run never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (configs)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cache_dir_for(input_path: Path, override: str | Path | None = None) -> Path:
    """``<input>.scores/`` beside the input, or ``override/<input name>.scores/``."""
    base = Path(override) if override else input_path.parent
    return base / f"{input_path.name}.scores"


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_cache(cache_file: Path) -> dict[str, Any]:
    """A cache file as written by :func:`cached_values` (``{"config": ..., "values": {key: value}}``);
    ``{}`` when it is missing or corrupt (a corrupt cache is rebuilt, never trusted)."""
    try:
        data = json.loads(Path(cache_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("values"), dict) else {}


def cached_scores(cache_file: Path, texts: Sequence[str], source: str | Path) -> list[float]:
    """The scores evaluate.py cached for ``texts`` (generations of ``source``); empty texts score 0 (as
    ``eval.empty_score`` does by default). Raises when any other text is missing, naming the fix."""
    if not Path(cache_file).is_file():
        raise FileNotFoundError(f"score cache {cache_file} does not exist: run scripts/evaluate.py on {source} "
                                "first (it writes <generations>.scores/<judge>.json)")
    cache = read_cache(Path(cache_file)).get("values", {})
    missing = [t for t in texts if t.strip() and t not in cache]
    if missing:
        raise ValueError(f"{cache_file} lacks scores for {len(missing)} generations of {source} (first: "
                         f"{missing[0][:60]!r}); run scripts/evaluate.py on {source} first")
    return [float(cache.get(t, 0.0)) for t in texts]


def cached_scores_by_scorer(source: Path, texts: Sequence[str], scorers: Sequence[str],
                            scores_dir: str | Path | None = None) -> dict[str, list[float]]:
    """:func:`cached_scores` of ``texts`` for each scorer name, from ``scores_dir`` (default: the cache
    evaluate.py writes beside ``source``)."""
    cache = Path(scores_dir) if scores_dir else cache_dir_for(Path(source))
    return {name: cached_scores(cache / f"{name}.json", texts, source) for name in scorers}


def _known(cache_file: Path | None, config_fp: str) -> dict[str, Any]:
    """The cached values when the cache was written under ``config_fp`` (else none)."""
    if cache_file is None:
        return {}
    data = read_cache(cache_file)
    return data["values"] if data.get("config") == config_fp else {}


def all_cached(cache_file: Path | None, config_fp: str, keys: Sequence[str]) -> list[Any] | None:
    """Values for ``keys`` when every one is cached under ``config_fp``, else None (nothing is computed)."""
    known = _known(cache_file, config_fp)
    return [known[k] for k in keys] if all(k in known for k in keys) else None


def cached_values(
    cache_file: Path | None,
    config_fp: str,
    keys: Sequence[str],
    compute: Callable[[list[str]], list[Any]],
) -> list[Any]:
    """Values for ``keys``; only keys missing from the cache are passed to ``compute`` (deduplicated)."""
    known = _known(cache_file, config_fp)
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        new = compute(missing)
        if len(new) != len(missing):
            raise RuntimeError(f"computed {len(new)} values for {len(missing)} keys")
        known.update(zip(missing, new, strict=True))
        if cache_file is not None:
            try:
                _atomic_write_json(cache_file, {"config": config_fp, "values": known})
            except OSError:
                pass  # read-only location: the scores are still returned, just not cached
    return [known[k] for k in keys]
