"""A user's prompt file (JSON lines or ``.txt``), read the same way by build_data's ``rtp_jsonl`` source and
generate.py, so a file one of them accepts the other accepts too.

A user's file is not one of this project's resumable outputs (:mod:`rectify.data.jsonl`): a last line
without a newline is a complete record (editors and exporters often omit it), a UTF-8 BOM (Excel, Notepad)
is dropped, and every record keeps its real line number, blank lines counted, so errors and ``source``
fields point at the line a user would open.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rectify.data.jsonl import JSONLError, Line, numbered_lines, parse_object

SHAPES = '{"prompt": {"text": ...}} (or "prompt" / a top-level "text" as a string)'


def normalise_prompt(obj: dict[str, Any], where: str, error: type[ValueError] = JSONLError) -> dict[str, Any]:
    """``obj`` in the RealToxicityPrompts shape ``{"prompt": {"text": ...}, ...}``; a string ``"prompt"`` or a
    top-level ``"text"`` is moved there, other fields kept. Anything else: ``error`` naming ``where``."""
    prompt = obj.get("prompt", None)
    if prompt is None and isinstance(obj.get("text"), str):
        return {k: v for k, v in obj.items() if k != "text"} | {"prompt": {"text": obj["text"]}}
    if isinstance(prompt, str):
        return obj | {"prompt": {"text": prompt}}
    if isinstance(prompt, dict) and isinstance(prompt.get("text"), str):
        return obj
    raise error(f"{where}: expected {SHAPES}")


def iter_prompt_file(path: str | Path, error: type[ValueError] = JSONLError) -> Iterator[tuple[Line, dict[str, Any]]]:
    """``(line, record)`` for every non-blank line: a ``.txt`` line is one prompt (``source`` set to
    ``file:line``), any other file is JSON lines normalised by :func:`normalise_prompt`."""
    path = Path(path)
    text = path.suffix.lower() == ".txt"
    for line in numbered_lines(path, error):
        if text:
            yield line, {"prompt": {"text": line.text.rstrip("\n")}, "source": f"{path.name}:{line.number}"}
        else:
            yield line, normalise_prompt(parse_object(line.text, line.where, error), line.where, error)
