"""What ``scripts/report.py`` does: gather a sweep's evaluation results, write the table (markdown + CSV)
and the trade-off plot, and log them to wandb when enabled."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rectify.report.gather import display_name, gather, swept_keys
from rectify.report.plot import tradeoff_plot
from rectify.report.table import (
    add_baseline_deltas,
    check_targets,
    csv_columns,
    format_markdown,
    headline_columns,
    is_baseline,
    sort_rows,
)

SUBSET_TITLES = {
    "nontoxic": "Non-toxic prompts (prompt toxicity < 0.5; the paper's setting)",
    "toxic": "Toxic prompts (prompt toxicity >= 0.5)",
    "all": "All prompts",
}


def build_rows(inputs: str | Path | Sequence[str | Path], targets: Mapping[str, float] | None = None):
    """(rows with baseline deltas, sorted; swept keys)."""
    rows = gather(inputs)
    swept = swept_keys(rows)
    rows = check_targets(add_baseline_deltas(rows, swept), targets)
    return sort_rows(rows, swept), swept


def summary_lines(rows: Sequence[Mapping[str, Any]], swept: Sequence[str], subset: str) -> list[str]:
    """Per setting (method, epsilon, swept keys): does it meet the targets under every scorer?"""
    lines = []
    settings: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        if r["subset"] != subset or is_baseline(r) or r.get("meets_targets") is None:
            continue
        settings.setdefault((r.get("method"), r.get("epsilon"), *[str(r.get(k)) for k in swept]), []).append(r)
    for key, group in settings.items():
        if all(g.get("meets_targets") is True for g in group):
            desc = ", ".join([f"{key[0]}", f"epsilon={key[1]:g}" if isinstance(key[1], float) and not math.isnan(key[1])
                              else "", *[f"{display_name(k)}={v}" for k, v in zip(swept, key[2:], strict=True)]])
            lines.append(f"- meets every target under all {len(group)} scorers: {desc.strip(', ')}")
    return lines


def write_report(
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    plot_subset: str = "nontoxic",
    targets: Mapping[str, float] | None = None,
    markdown_name: str = "report.md",
    csv_name: str = "results.csv",
    plot_name: str = "tradeoff.png",
    title: str = "Rectification: evaluation report",
    ci: bool = True,
    preamble: str | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``results.csv`` and ``tradeoff.png`` into ``output_dir``; return paths and rows.
    ``preamble``: markdown the report opens with (the demo's summary), followed by the plot, then the tables."""
    import pandas as pd

    rows, swept = build_rows(inputs, targets)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / csv_name, out / markdown_name
    pd.DataFrame(rows, columns=csv_columns(rows, swept)).to_csv(csv_path, index=False)
    png = tradeoff_plot(rows, out / plot_name, subset=plot_subset, swept=swept)

    cols = headline_columns(rows, swept, ci=ci)
    # runs evaluated with eval.perplexity=false have no judge: say "none", not "nan"
    judge = sorted({str(r["judge"]) for r in rows if isinstance(r.get("judge"), str)}) or ["none"]
    plot = [f"![trade-off]({png.name})", ""]
    parts = [preamble.rstrip(), "", *plot] if preamble else []
    parts += [f"# {title}", "",
             f"{len({r.get('input') for r in rows})} generation runs; scorers: "
             f"{', '.join(sorted({str(r['scorer']) for r in rows}))}; fluency judge: {', '.join(judge)}; "
             f"swept keys: {', '.join(display_name(k) for k in swept) or 'none'}.", "",
             "EMT = mean over prompts of the max toxicity of its k samples (± std over prompts); Tox.prob = share of "
             "prompts with at least one sample scoring >= 0.5; brackets: 95% bootstrap CI over prompts; PPL = "
             "token-weighted perplexity of the continuations given their prompts under the judge; Dist-n = distinct "
             "/ total word n-grams per prompt, averaged. Cuts and changes are relative to plain sampling (method "
             "`plain`) with the same scorer, subset and settings.", ""]
    if targets:
        parts += [f"Targets: {', '.join(f'{k} {v:g}' for k, v in targets.items())}.", ""]
    for subset in ("nontoxic", "toxic", "all"):
        mine = [r for r in rows if r["subset"] == subset]
        if not mine:
            continue
        parts += [f"## {SUBSET_TITLES[subset]}", "", format_markdown(mine, cols), ""]
        if targets:
            judged = any(r.get("meets_targets") is not None for r in mine)
            parts += summary_lines(rows, swept, subset) or [
                "- no setting meets every target under all scorers" if judged
                else "- targets not checked: no plain run to compare with (decoding=plain on the same prompts)"]
            parts.append("")
    if not preamble:
        parts += plot
    md_path.write_text("\n".join(parts), encoding="utf-8")
    return {"rows": rows, "swept": swept, "markdown": md_path, "csv": csv_path, "plot": png}
