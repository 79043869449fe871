"""The report table: relative change against the plain baseline, sorting, markdown and CSV rendering."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rectify.report.gather import display_name, input_here, is_missing
from rectify.report.targets import target_misses

SUBSET_ORDER = {"nontoxic": 0, "toxic": 1, "all": 2}
BASELINE_METHOD = "plain"
DELTA_COLUMNS = ("tox_prob_cut_pct", "emt_cut_pct", "ppl_change_pct", "dist3_change")
# Decoding settings that only act when Q_D caps the distribution: a plain run carries the config's defaults for
# them, which say nothing about it, so they never decide which plain run a rectified one is compared with.
RECTIFY_ONLY = {"epsilon", "cap_mode", "q_scale", "q_baseline", "p_min", "p_max", "q_head", "q_cache",
                "shared_backbone", "tilt", "stop_neutral", "share_lower", "dtype", "sparse_support", "support_mass",
                "calibration"}   # DecodingConfig fields that act only with a Q_D (decoding.dtype is Q_D's)


def to_float(v: Any) -> float:
    """A table cell as a float; NaN for blanks and non-numbers (CSV cells arrive as strings)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def is_baseline(row: Mapping[str, Any]) -> bool:
    return str(row.get("method")) == BASELINE_METHOD


def find_baseline(row: Mapping[str, Any], baselines: Sequence[Mapping[str, Any]], swept: Sequence[str]):
    """The plain run to compare ``row`` with: same scorer, subset and judge, and the same value for every
    swept key that the baseline itself has (keys only rectified runs have, such as Q_D's size, are ignored, and
    so are the rectification-only decoding settings, :data:`RECTIFY_ONLY`). With several candidates, the latest
    evaluation."""
    keys = [k for k in swept if not (".decoding." in f".{k}" and k.rsplit(".", 1)[-1] in RECTIFY_ONLY)]
    cands = []
    for b in baselines:
        if (b["scorer"], b["subset"], str(b.get("judge"))) != (row["scorer"], row["subset"], str(row.get("judge"))):
            continue
        if all(is_missing(b.get(k)) or str(b.get(k)) == str(row.get(k)) for k in keys):
            cands.append(b)
    return max(cands, key=lambda b: str(b.get("evaluated_at") or "")) if cands else None


def deltas(row: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float]:
    """:data:`DELTA_COLUMNS` of ``row`` against ``base``: Tox.prob and EMT cut (% of the baseline's), PPL change
    (%), Dist-3 change (absolute); NaN where the baseline's value is 0 or missing."""
    bt, be, bp = to_float(base.get("tox_prob")), to_float(base.get("emt")), to_float(base.get("ppl"))
    return {
        "tox_prob_cut_pct": 100 * (bt - to_float(row.get("tox_prob"))) / bt if bt else math.nan,
        "emt_cut_pct": 100 * (be - to_float(row.get("emt"))) / be if be else math.nan,
        "ppl_change_pct": 100 * (to_float(row.get("ppl")) - bp) / bp if bp else math.nan,
        "dist3_change": to_float(row.get("dist3")) - to_float(base.get("dist3")),
    }


def add_baseline_deltas(rows: list[dict[str, Any]], swept: Sequence[str]) -> list[dict[str, Any]]:
    """Add Tox.prob cut %, EMT cut %, PPL change % and Dist-3 change (absolute) vs the plain baseline."""
    baselines = [r for r in rows if is_baseline(r)]
    for r in rows:
        b = None if is_baseline(r) else find_baseline(r, baselines, swept)
        if b is None:
            r.update(dict.fromkeys(DELTA_COLUMNS, math.nan), baseline_input=None)
            continue
        r.update(deltas(r, b), baseline_input=b.get("input"))
    return rows


def check_targets(rows: list[dict[str, Any]], targets: Mapping[str, float] | None) -> list[dict[str, Any]]:
    """Flag rows meeting every target (:mod:`rectify.report.targets`; a NaN delta misses); plain rows, and rows
    without a plain run to compare with, get None (not judged, rather than "no")."""
    if not targets:
        return rows
    for r in rows:
        unjudged = is_baseline(r) or not r.get("baseline_input")
        r["meets_targets"] = None if unjudged else not target_misses(r, targets)
    return rows


def _order(v: Any) -> tuple[int, float, str]:
    """Sort key of a swept value: numbers by value (Q_D sizes 6 < 12 < 30, also when read back as strings),
    then anything else as text, missing last."""
    if is_missing(v):
        return (2, 0.0, "")
    x = to_float(v)
    return (1, 0.0, str(v)) if math.isnan(x) else (0, x, "")


def sort_rows(rows: list[dict[str, Any]], swept: Sequence[str]) -> list[dict[str, Any]]:
    """Subset (non-toxic first), scorer, plain before the rest, swept keys, method, epsilon ascending."""

    def key(r):
        eps = to_float(r.get("epsilon"))
        return (SUBSET_ORDER.get(str(r["subset"]), 9), str(r["scorer"]), not is_baseline(r),
                *[_order(r.get(k)) for k in swept], str(r.get("method")), math.inf if math.isnan(eps) else eps)

    return sorted(rows, key=key)


# ----------------------------------------------------------------------------- rendering


def fmt(v: Any, digits: int = 3) -> str:
    if is_missing(v):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
    return str(v)


def fmt_setting(v: Any) -> str:
    """A swept setting as one would type it (tilt 0 and 64, q_scale 6.67), not padded to a metric's digits."""
    return f"{v:.6g}" if isinstance(v, float) and not is_missing(v) else fmt(v)


def _ci(r: Mapping[str, Any], key: str, digits: int = 3) -> str:
    lo, hi = r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")
    return "" if is_missing(lo) or is_missing(hi) else f" [{to_float(lo):.{digits}f}, {to_float(hi):.{digits}f}]"


def _signed(v: Any, digits: int = 1, suffix: str = "") -> str:
    return "-" if is_missing(v) or math.isnan(to_float(v)) else f"{to_float(v):+.{digits}f}{suffix}"


Column = tuple[str, Callable[[Mapping[str, Any]], str]]


def input_column(rows: Sequence[Mapping[str, Any]]) -> list[Column]:
    """A ``run`` column naming each row's generations file (the path below the inputs' common folder), when the
    rows come from more than one file: two runs that differ only in something no override records would
    otherwise show as identical rows."""
    paths = list(dict.fromkeys(p for r in rows if (p := input_here(r))))
    if len(paths) < 2:
        return []
    root = os.path.commonpath([str(Path(p).parent) for p in paths])
    return [("run", lambda r: os.path.relpath(input_here(r), root) if input_here(r) else "")]


def headline_columns(rows: Sequence[Mapping[str, Any]], swept: Sequence[str] = (), ci: bool = True) -> list[Column]:
    """Markdown columns: method, epsilon, swept keys, scorer, subset, EMT, Tox.prob, PPL, Dist-n, sizes, deltas."""
    cols: list[Column] = [("method", lambda r: fmt(r.get("method"))), ("epsilon", lambda r: fmt(r.get("epsilon"), 3))]
    cols += [(display_name(k), lambda r, k=k: fmt_setting(r.get(k))) for k in swept]
    cols += [
        ("scorer", lambda r: fmt(r.get("scorer"))),
        ("subset", lambda r: fmt(r.get("subset"))),
        ("EMT (± std)", lambda r: f"{fmt(r.get('emt'))} ± {fmt(r.get('emt_std'), 2)}" + (_ci(r, "emt") if ci else "")),
        ("Tox.prob", lambda r: fmt(r.get("tox_prob")) + (_ci(r, "tox_prob") if ci else "")),
        ("PPL", lambda r: fmt(r.get("ppl"), 2) + (_ci(r, "ppl", 2) if ci else "")),
        ("Dist-1", lambda r: fmt(r.get("dist1"))),
        ("Dist-2", lambda r: fmt(r.get("dist2"))),
        ("Dist-3", lambda r: fmt(r.get("dist3"))),
        ("n prompts", lambda r: fmt(r.get("n_prompts"))),
        ("k", lambda r: fmt(r.get("k"))),
    ]
    if any(not is_missing(r.get("dead_end_fallback_rate")) for r in rows):
        cols.append(("dead-end rate", lambda r: fmt(r.get("dead_end_fallback_rate"), 4)))
    if any(k in r for r in rows for k in DELTA_COLUMNS):
        cols += [
            # changes, as the README and summary write them: -90% is a 90% cut, +10% a rise
            ("Tox.prob change", lambda r: _signed(-to_float(r.get("tox_prob_cut_pct")), 1, "%")),
            ("EMT change", lambda r: _signed(-to_float(r.get("emt_cut_pct")), 1, "%")),
            ("PPL change", lambda r: _signed(r.get("ppl_change_pct"), 1, "%")),
            ("Dist-3 change", lambda r: _signed(r.get("dist3_change"), 3)),
        ]
    if any(r.get("meets_targets") is not None and not is_missing(r.get("meets_targets")) for r in rows):
        cols.append(("meets targets", lambda r: fmt(r.get("meets_targets"))))
    return cols


def format_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub markdown table (``|`` in cells escaped)."""
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(f(r).replace("|", "\\|") for _, f in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: Path, stem: str, columns: Sequence[str] | None = None,
                head: str = "") -> str:
    """The analysis scripts' output: every key of ``rows`` in ``<stem>.csv``, and ``head`` above a markdown table
    of ``columns`` (default: all) in ``<stem>.md``. Returns the markdown table."""
    import pandas as pd

    out_dir = Path(out_dir)
    pd.DataFrame(list(rows)).to_csv(out_dir / f"{stem}.csv", index=False)
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    markdown = format_markdown(rows, [(c, lambda r, c=c: fmt(r[c])) for c in cols])
    (out_dir / f"{stem}.md").write_text(f"{head}\n\n{markdown}\n" if head else f"{markdown}\n", encoding="utf-8")
    return markdown


CSV_COLUMNS = (
    "method", "epsilon", "scorer", "subset", "emt", "emt_std", "emt_ci_low", "emt_ci_high", "tox_prob",
    "tox_prob_ci_low", "tox_prob_ci_high", "ppl", "ppl_ci_low", "ppl_ci_high", "ppl_gen_mean", "dist1", "dist2",
    "dist3", "n_prompts", "k", "n_generations", "empty_rate", "short_rate", "toxic_gen_rate", "dead_end_fallback_rate",
    *DELTA_COLUMNS, "meets_targets", "judge", "input", "baseline_input", "evaluated_at",
)


def csv_columns(rows: Sequence[Mapping[str, Any]], swept: Sequence[str]) -> list[str]:
    """Headline numbers first (swept keys after epsilon), then every other key any row has."""
    first = ["method", "epsilon", *swept]
    rest = [c for c in CSV_COLUMNS if c not in first and any(c in r for r in rows)]
    others = sorted({k for r in rows for k in r} - set(first) - set(rest))
    return first + rest + others
