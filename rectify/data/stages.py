"""Bookkeeping that makes each pipeline stage skippable and safely resumable.

A stage records a fingerprint of everything its output depends on (its config and its input's
fingerprint) when it starts, and a ``done`` marker when it finished. A rerun then skips a finished stage
with the same fingerprint, resumes a started one, and refuses to mix outputs of two different configs in
one directory (unless told to overwrite).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rectify.data.jsonl import write_json_atomic
from rectify.errors import RunRefused


class StageConfigMismatch(RunRefused, RuntimeError):
    """The output dir holds a stage started with another config."""


def fingerprint(*parts: Any) -> str:
    """A stable short hash of JSON-able parts (configs, upstream fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def file_digests(paths: Any) -> dict[str, str | None]:
    """sha256 of each named input file (None: missing, left for the reader to report): user files are
    fingerprinted by content, so editing one in place makes its stages rerun instead of being reused."""
    out: dict[str, str | None] = {}
    for name, path in (paths or {}).items():
        if path:
            f = Path(path)
            out[name] = hashlib.sha256(f.read_bytes()).hexdigest() if f.is_file() else None
    return out


class Stage:
    """State files of one stage: ``<out>/.state/<name>.started.json`` and ``<name>.done.json``."""

    def __init__(self, out_dir: str | Path, name: str, fp: str, outputs: Iterable[str | Path],
                 scratch: Iterable[str | Path] = ()) -> None:
        """``outputs`` must all exist when done; ``scratch`` (e.g. shard dirs) only exists while running."""
        self.out_dir = Path(out_dir)
        self.name = name
        self.fp = fp
        self.outputs = [self.out_dir / p for p in outputs]
        self.scratch = [self.out_dir / p for p in scratch]
        state = self.out_dir / ".state"
        self.started_path = state / f"{name}.started.json"
        self.done_path = state / f"{name}.done.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def is_done(self) -> bool:
        """True when this stage finished with the same fingerprint and its outputs are all there."""
        done = self._read(self.done_path)
        return bool(done and done.get("fingerprint") == self.fp and all(p.exists() for p in self.outputs))

    def done_info(self) -> dict[str, Any]:
        return self._read(self.done_path) or {}

    def clear(self) -> None:
        """Remove the stage's outputs and state (``overwrite=true``)."""
        for p in self.outputs + self.scratch:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self.started_path.unlink(missing_ok=True)
        self.done_path.unlink(missing_ok=True)

    def begin(self, *, overwrite: bool = False) -> None:
        """Record the start; refuse to continue outputs another config began."""
        if overwrite:
            self.clear()
        started = self._read(self.started_path)
        has_outputs = any(p.exists() for p in self.outputs + self.scratch)
        if started and started.get("fingerprint") != self.fp and has_outputs:
            raise StageConfigMismatch(
                f"{self.out_dir}: stage {self.name!r} was started with another config "
                f"(fingerprint {started.get('fingerprint')} != {self.fp}); use a new out_dir or overwrite=true"
            )
        if has_outputs and not started:
            raise StageConfigMismatch(
                f"{self.out_dir}: stage {self.name!r} outputs exist but were not written by this pipeline "
                f"({[str(p) for p in self.outputs + self.scratch if p.exists()]}); use a new out_dir or overwrite=true"
            )
        self.done_path.unlink(missing_ok=True)
        write_json_atomic(self.started_path, {"fingerprint": self.fp})

    def finish(self, info: dict[str, Any] | None = None) -> None:
        write_json_atomic(self.done_path, {"fingerprint": self.fp, **(info or {})})
