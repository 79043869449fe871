"""JSON-lines files that survive being killed: append whole lines, resume after the last complete one.

Every long stage of the data pipeline appends one record per line. A process killed mid-write can leave
at most one half-written last line (no trailing newline); :func:`repair_tail` cuts it off so a restarted
stage continues after the last *complete* record and never duplicates or half-keeps one. A malformed line
anywhere else is real corruption and raises :class:`JSONLError` naming ``file:line``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from rectify.errors import InputError


class JSONLError(InputError, ValueError):
    """A JSON-lines file holds a line that is not a JSON object; the message says ``file:line``."""


def not_utf8(exc: UnicodeDecodeError, where: str, error: type[ValueError] = JSONLError) -> ValueError:
    """``error`` for a line that is not UTF-8 (a Latin-1 or cp1252 export, say), naming the first bad byte's
    column and how to fix the file, instead of Python's message with a byte position in the whole file."""
    column = len(exc.object[:exc.start].decode("utf-8", "replace")) + 1
    return error(f"{where}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column {column}); save the file "
                 "as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > NEW`) or remove the line")


def parse_object(text: bytes | str, where: str, error: type[ValueError] = JSONLError) -> dict[str, Any]:
    """One JSON object from ``text``; otherwise ``error`` with a message that starts with ``where`` (file:line).

    Shared by every reader of a JSON(-lines) input so a bad line is reported the same way everywhere."""
    # without its line break: json counts columns from the last newline, so an error at the end of a line
    # (a missing "}") would be "line 2 column 1" of the document, reported as column 1
    text = text.rstrip(b"\r\n") if isinstance(text, bytes) else text.rstrip("\r\n")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        # json's "Unterminated string starting at" already ends in "at"
        raise error(f"{where}: malformed JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})") from exc
    except UnicodeDecodeError as exc:  # bytes that are not UTF-8
        raise not_utf8(exc, where, error) from exc
    if not isinstance(record, dict):
        raise error(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


class Line(NamedTuple):
    number: int  # 1-based
    where: str  # "file:line", the prefix of every error about this line
    text: str


def _decode(raw: bytes, first: bool) -> str:
    """One line of a text file as text mode read it: a BOM dropped from the first, its line break ``\\n``."""
    text = raw.decode("utf-8-sig" if first else "utf-8")
    stripped = text.rstrip("\r\n")
    return stripped + "\n" if len(stripped) < len(text) else text


def numbered_lines(path: str | Path, error: type[ValueError] = JSONLError,
                   on_bad: Callable[[ValueError], None] | None = None) -> Iterator[Line]:
    """Every non-blank line of a UTF-8 text file with its number and ``file:line`` label; a BOM (files saved
    by Excel or Notepad) is dropped so it does not end up in the first record.

    Lines are decoded one by one, so a line that is not UTF-8 is ``error`` naming ``file:line``: raised, or
    given to ``on_bad`` (which may skip it) and the next line read. Line breaks are ``\\n``, ``\\r\\n`` or
    ``\\r``, as in text mode."""
    lineno = 0
    with open(path, "rb") as fh:
        for chunk in fh:  # a chunk ends at "\n", so "\r\n" is never split between two
            for raw in chunk.splitlines(keepends=True):  # bytes split on "\n", "\r\n" and "\r" only
                lineno += 1
                where = f"{path}:{lineno}"
                try:
                    text = _decode(raw, lineno == 1)
                except UnicodeDecodeError as exc:
                    bad = not_utf8(exc, where, error)
                    if on_bad is None:
                        raise bad from exc
                    on_bad(bad)
                    continue
                if text.strip():
                    yield Line(lineno, where, text)


def iter_jsonl(path: str | Path, *, allow_partial_tail: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON-lines file; blank lines are skipped.

    A last line without a newline is a write that was interrupted: it is skipped when
    ``allow_partial_tail`` (readers of a file that may still be growing), an error otherwise.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                if allow_partial_tail:
                    return
                if line.strip():
                    raise JSONLError(f"{path}:{lineno}: last line is incomplete (no newline): the writer was "
                                     "interrupted; rerun the stage to resume it")
            if not line.strip():
                continue
            yield parse_object(line, f"{path}:{lineno}")


def read_jsonl(path: str | Path, *, allow_partial_tail: bool = False) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (see :func:`iter_jsonl`)."""
    return list(iter_jsonl(path, allow_partial_tail=allow_partial_tail))


def repair_tail(path: str | Path) -> int:
    """Cut off an interrupted (newline-less) last line; return how many bytes were removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        # Walk back from the end in blocks to the last newline.
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        else:
            keep = 0
        if keep < size:
            fh.truncate(keep)
    return size - keep


def resume_records(path: str | Path) -> list[dict[str, Any]]:
    """Repair an interrupted tail, then return the complete records already written (validated)."""
    path = Path(path)
    if not path.exists():
        return []
    repair_tail(path)
    return read_jsonl(path)


def count_complete(path: str | Path) -> int:
    """How many complete records a (possibly interrupted) JSON-lines file holds, after repairing its tail."""
    return len(resume_records(path))


def dumps(record: dict[str, Any]) -> str:
    """One JSON line (no newline inside, unicode kept readable)."""
    return json.dumps(record, ensure_ascii=False)


class JSONLAppender:
    """Append records to a JSON-lines file, one ``write`` per complete line, flushed at once.

    Opened with ``O_APPEND`` so several processes appending to *different* files (one shard per rank)
    and restarts appending to the same file are safe; each line reaches the OS in a single call.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        data = (dumps(record) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:  # os.write may write less than asked (rare on regular files)
            n = os.write(self._fd, view)
            view = view[n:]
        self.written += 1

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.append(record)

    def close(self) -> None:
        if self._fd >= 0:
            if self._fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JSONLAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Append records to ``path``; return how many were written."""
    with JSONLAppender(path) as out:
        out.extend(records)
        return out.written


def _atomic_text(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write a whole JSON-lines file at once: readers see the old file or the complete new one."""
    count = 0

    def write(fh) -> None:
        nonlocal count
        for record in records:
            fh.write(dumps(record) + "\n")
            count += 1

    _atomic_text(Path(path), write)
    return count


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write one JSON document atomically (summaries, stage markers)."""
    _atomic_text(Path(path), lambda fh: fh.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))
