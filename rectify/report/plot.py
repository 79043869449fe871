"""The trade-off plot: toxicity probability against perplexity, one point per epsilon per scorer, the plain
baseline marked; lines join the epsilons of one scorer (and one setting of every other swept key)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rectify.report.gather import display_name
from rectify.report.table import is_baseline, to_float

LINESTYLES = ("-", "--", ":", "-.")


def _err(r: Mapping[str, Any], key: str) -> tuple[float, float]:
    v, lo, hi = to_float(r.get(key)), to_float(r.get(f"{key}_ci_low")), to_float(r.get(f"{key}_ci_high"))
    if math.isnan(lo) or math.isnan(hi):
        return 0.0, 0.0
    return max(v - lo, 0.0), max(hi - v, 0.0)


def tradeoff_plot(
    rows: Sequence[Mapping[str, Any]],
    out_path: str | Path,
    subset: str = "nontoxic",
    swept: Sequence[str] = (),
    title: str | None = None,
) -> Path:
    """Write the PNG and return its path. Falls back to the ``all`` subset when ``subset`` has no rows, and
    to Tox.prob vs epsilon (baseline as a dashed line) when perplexity was not computed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r.get("subset") == subset] or [r for r in rows if r.get("subset") == "all"]
    subset = chosen[0]["subset"] if chosen else subset
    has_ppl = any(not math.isnan(to_float(r.get("ppl"))) for r in chosen)
    xkey = "ppl" if has_ppl else "epsilon"
    others = [k for k in swept if display_name(k).rsplit(".", 1)[-1] != "epsilon"]
    scorers = sorted({str(r["scorer"]) for r in chosen})
    groups = sorted({tuple(str(r.get(k)) for k in others) for r in chosen if not is_baseline(r)})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    for si, scorer in enumerate(scorers):
        color = colors[si % len(colors)]
        mine = [r for r in chosen if str(r["scorer"]) == scorer]
        for gi, group in enumerate(groups):
            pts = [r for r in mine if not is_baseline(r) and tuple(str(r.get(k)) for k in others) == group]
            pts.sort(key=lambda r: to_float(r.get("epsilon")))
            if not pts:
                continue
            label = scorer + (" (" + ", ".join(f"{display_name(k)}={v}" for k, v in zip(others, group, strict=True)) + ")" if others else "")
            xs, ys = [to_float(r.get(xkey)) for r in pts], [to_float(r.get("tox_prob")) for r in pts]
            xerr = list(zip(*[_err(r, "ppl") for r in pts], strict=True)) if has_ppl else None
            yerr = list(zip(*[_err(r, "tox_prob") for r in pts], strict=True))
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=color, linestyle=LINESTYLES[gi % len(LINESTYLES)],
                        marker="o", markersize=4, capsize=2, elinewidth=0.7, label=label)
            for r, x, y in zip(pts, xs, ys, strict=True):
                if not math.isnan(to_float(r.get("epsilon"))):
                    ax.annotate(f"ε={to_float(r['epsilon']):g}", (x, y), textcoords="offset points", xytext=(4, 3),
                                fontsize=7, color=color)
        for b in (r for r in mine if is_baseline(r)):
            y = to_float(b.get("tox_prob"))
            if has_ppl:
                ax.scatter([to_float(b.get("ppl"))], [y], marker="*", s=180, color=color, edgecolor="black", zorder=5,
                           label=f"{scorer}: plain")
            else:
                ax.axhline(y, color=color, linestyle="--", linewidth=1, label=f"{scorer}: plain")
    ax.set_xlabel("perplexity under the judge LM (lower = more fluent)" if has_ppl else "epsilon (perplexity not computed)")
    ax.set_ylabel("toxicity probability")
    ax.set_title(title or f"Toxicity vs fluency ({subset} prompts)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
