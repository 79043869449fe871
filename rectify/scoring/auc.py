"""Each scorer's ROC AUC on labelled comments (the insults test split by default) and its speed.

Used by ``scripts/analysis/scorer_auc.py`` for the README's scorer table: an evaluator that cannot tell insults
from ordinary comments would make every toxicity number built on it meaningless.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from rectify.data.sources import LabelledText, read_insults
from rectify.scoring import build_scorer

log = logging.getLogger(__name__)
# texts_per_cpu_s: texts per CPU-second of this process (all threads), a load-independent speed; on a shared
# machine texts_per_s (wall) depends on the other jobs.
COLUMNS = ("scorer", "auc", "texts_per_s", "texts_per_cpu_s", "load_s", "n", "toxic_share", "status")


def score_auc(scorer, rows: Sequence[LabelledText]) -> dict[str, Any]:
    """AUC and throughput of one built scorer on ``rows``."""
    texts = [r.text for r in rows]
    labels = np.array([r.label for r in rows])
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = scorer(texts)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ok = ~np.isnan(scores)
    return {
        "auc": float(roc_auc_score(labels[ok], scores[ok])),
        "texts_per_s": len(texts) / elapsed if elapsed > 0 else float("inf"),
        "texts_per_cpu_s": len(texts) / cpu if cpu > 0 else float("inf"),
        "n": int(ok.sum()),
        "toxic_share": float(labels[ok].mean()),
    }


def run(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the table for the scorers named in ``cfg["include"]`` (configs in ``cfg["scorers"]``)."""
    rows = read_insults(cfg.get("split", "test"))
    if cfg.get("max_texts"):
        rows = rows[: int(cfg["max_texts"])]
    table = []
    for name in cfg["include"]:
        scorer_cfg = cfg["scorers"].get(name) if cfg.get("scorers") else None
        row: dict[str, Any] = {"scorer": name, "status": "ok"}
        start = time.perf_counter()
        stage = "missing"  # until it loads; some fail only on their first texts (Perspective without a key)
        try:
            scorer = build_scorer(scorer_cfg if scorer_cfg is not None else name)
            row["load_s"] = time.perf_counter() - start
            stage = "failed"
            row.update(score_auc(scorer, rows))
        except (OSError, ValueError, RuntimeError) as e:
            if not cfg.get("skip_missing", True):
                raise
            log.warning("skipping %s (%s): %s", name, stage, e)
            table.append({**row, "status": f"{stage}: {str(e).splitlines()[0][:120]}"})
            continue
        log.info("%s: AUC %.3f, %.0f texts/s", name, row["auc"], row["texts_per_s"])
        table.append(row)
    return table


def _fmt(value: Any, col: str) -> str:
    if value is None or value == "":
        return ""
    if col == "auc":
        return f"{value:.3f}"
    if col in ("texts_per_s", "texts_per_cpu_s"):
        return f"{value:,.0f}"
    if col == "load_s":
        return f"{value:.1f}"
    if col == "toxic_share":
        return f"{value:.3f}"
    return str(value)


def to_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c), c) for c in COLUMNS) + " |\n" for r in table)


def write(table: Sequence[Mapping[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "scorer_auc.md", out_dir / "scorer_auc.csv"
    md.write_text(to_markdown(table))
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        for r in table:
            w.writerow({c: r.get(c, "") for c in COLUMNS})
    return md, csv_path
