"""Prompt files in, generation JSONL out, resumable without half lines.

Inputs: JSONL with ``{"prompt": {"text": ...}, ...}`` (RealToxicityPrompts shape; ``"prompt"`` may also be
a plain string, or a top-level ``"text"``), or a ``.txt`` file with one prompt per line. Outputs: one line
per prompt, ``{"prompt": {...}, "generations": [{"text": ...}, ...], ...}`` with the input's other
top-level fields carried over. Each line is written whole and flushed; on restart a trailing partial line
(a kill mid-write) is cut off and the complete lines are counted, so generation resumes at the next prompt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no lock, as before
    fcntl = None  # type: ignore[assignment]

from rectify.data.prompt_files import iter_prompt_file
from rectify.errors import InputError, RunRefused


class PromptFileError(InputError, ValueError):
    """A prompt file line could not be read (the message names file and line)."""


class OutputBusyError(RunRefused, RuntimeError):
    """Another process is writing the same output file."""


class ResumeRefused(RunRefused, ValueError):
    """An output file holds another run (other prompts, config or limit): appending would mix two runs."""


@contextmanager
def exclusive_writer(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while this process writes it, so a second writer
    (a rerun while a killed demo's stage still runs, say) fails at once instead of interleaving lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    with open(path, "a") as f:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OutputBusyError(f"{path} is being written by another process: wait for it to finish, or stop "
                                      "it, then rerun (finished prompts are kept)") from None
        try:
            yield
        except BaseException:
            if not existed and path.stat().st_size == 0:   # failed before a line (a bad Q_D path, say): leave no file
                path.unlink()
            raise


FORMATS = "A prompts file is JSON lines (.jsonl) or plain text (.txt), one prompt per line"


def read_prompts(path: str | Path) -> list[dict[str, Any]]:
    """Records ``{"prompt": {"text": ...}, ...}`` in file order (blank lines skipped); read by
    :func:`rectify.data.prompt_files.iter_prompt_file`, as build_data's ``rtp_jsonl`` source reads them."""
    path = Path(path)
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise PromptFileError(f"prompts file {path} {state}: set prompts_path to a .jsonl or .txt file")
    records: list[dict[str, Any]] = []
    try:
        for _, record in iter_prompt_file(path, PromptFileError):
            records.append(record)
    except PromptFileError as exc:
        if records or path.suffix.lower() in (".jsonl", ".json", ".txt"):
            raise
        # a first line that is not JSON in a .csv or .text file: most likely meant as plain text
        raise PromptFileError(f"{exc}. {FORMATS}; {path.name} was read as JSON lines: give a plain-text file "
                              "the suffix .txt") from exc
    return records


def prepare_resume(path: str | Path) -> int:
    """Cut a trailing partial line off ``path`` (if any) and return its number of complete lines."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when there is no complete line
    if end != len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return data[:end].count(b"\n")


class JsonlAppender:
    """Append whole JSON lines, flushed (and fsynced) one by one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, obj: Any) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON in one rename (a kill never leaves a torn file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
