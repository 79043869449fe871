"""The rule a ``select`` stage chose, for shell scripts: its name, then its generate.py overrides, one a line.

    python -m rectify.analysis.selected_rule outputs/demo/selected.json

Falls back to the least-bad candidate when nothing was eligible (the scripts report that run as a failure).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def selected_rule(path: str | Path) -> tuple[str, list[str]]:
    """``(name, overrides)`` of the selected (or least-bad) candidate in a ``selected.json``."""
    record: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    name = record.get("selected") or record.get("least_bad")
    if not name:
        raise ValueError(f"{path}: no candidate was selected and none is named least bad")
    for cand in record.get("candidates", []):
        if cand["name"] == name:
            return name, list(cand.get("overrides") or [])
    raise ValueError(f"{path}: the chosen rule {name!r} is not among its candidates")


if __name__ == "__main__":
    rule, overrides = selected_rule(sys.argv[1])
    print("\n".join([rule, *overrides]))
