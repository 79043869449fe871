"""Content digests of a generation run's input files (the prompt file, the Q_D export).

Why: a run records its inputs by path, so a copied or moved run folder (``outputs/demo`` copied to
``outputs/demo2``, a clone moved elsewhere) names other paths than the config that would resume it. Two paths
that hold the same bytes draw the same samples, so a resume compares digests where the paths differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rectify.assets import sha256_of

INPUT_PATH_KEYS = ("prompts_path", "value_model_path")


def path_digest(path: str | Path | None) -> str | None:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order); None when the path
    is unset or missing."""
    if path is None:
        return None
    p = Path(str(path))
    if p.is_file():
        return sha256_of(p)
    if not p.is_dir():
        return None
    digest = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        digest.update(f"{f.relative_to(p).as_posix()}\0{sha256_of(f)}\n".encode())
    return digest.hexdigest()


def input_digests(config: Mapping[str, Any]) -> dict[str, str | None]:
    """The digest of every input path a generation config names (recorded in the run's ``.meta.json``)."""
    return {key: path_digest(config.get(key)) for key in INPUT_PATH_KEYS if config.get(key) is not None}


def same_input(before: Any, now: Any, recorded_digest: str | None = None) -> bool:
    """True when two recorded input paths hold the same bytes: the same path, or equal digests (the earlier
    path's recorded digest, else its digest now if it still exists)."""
    if before == now:
        return True
    if before is None or now is None:
        return False
    earlier = recorded_digest or path_digest(before)
    return earlier is not None and earlier == path_digest(now)
