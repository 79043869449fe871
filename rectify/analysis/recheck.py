"""Does a re-check on other prompts land inside the reported test run's intervals? Compared as cuts.

The issue's bar for a re-check on prompts (and judges) never seen: its cuts must land inside the bootstrap
intervals of the reported ones. Each run's cut against its own plain sampling is computed with a paired
interval (:mod:`rectify.evaluation.paired`); the re-check's point cut is then placed against the reported run's
interval, per judge, for Toxicity Probability and EMT. A judge only the re-check has is listed without a verdict.

That bar ignores the re-check's own sampling error: with two equally sized samples of the same effect, a point
estimate falls outside the other's 95% interval about one time in six. So the difference of the two cuts is also
given with an interval (the two runs use different prompts, so their errors are independent; each interval is read
as normal, se = width / 3.92), and whether that interval covers zero.

    python -m rectify.analysis.recheck REPORTED_ROOT RECHECK_ROOT SELECTED_JSON [out.md]

REPORTED_ROOT: the demo's ``test/generations``; RECHECK_ROOT: ``check_rule.sh``'s output dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rectify.evaluation.paired import Cut, run_cuts
from rectify.report.gather import input_here
from rectify.report.summary import SUBSET, rows_per_judge
from rectify.selection import SELECTED

METRICS = (("tox_prob", "Toxicity Probability"), ("emt", "EMT"))
VERDICT = {True: "yes", False: "**no**", None: "n/a"}


def _run_cuts(root: str | Path, baseline: str, rule: str) -> tuple[dict[str, dict[str, Cut]], int]:
    """Paired cuts of ``rule`` vs ``baseline`` under every judge evaluated in ``root``, and the prompt count."""
    plain, mine = rows_per_judge(root, baseline, rule)
    judges = sorted(set(plain) & set(mine))
    first = judges[0]
    return run_cuts(input_here(plain[first]), input_here(mine[first]), judges, SUBSET), int(plain[first]["n_prompts"])


def _pct(x: float) -> str:
    return f"{round(-100 * x):+d}%"


def difference(reported: Cut, recheck: Cut) -> Cut:
    """The re-check's cut minus the reported one, with a 95% interval from both runs' (independent) intervals."""
    se = (((reported.high - reported.low) / 3.92) ** 2 + ((recheck.high - recheck.low) / 3.92) ** 2) ** 0.5
    d = recheck.value - reported.value
    return Cut(value=d, low=d - 1.96 * se, high=d + 1.96 * se)


def _points(x: float) -> str:
    return f"{round(100 * x):+d}"


def compare(reported: str | Path, recheck: str | Path, selected: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table and rows: per judge and metric, the reported cut with its interval and the re-check's cut."""
    sel = Path(selected)
    record = json.loads((sel / SELECTED if sel.is_dir() else sel).read_text(encoding="utf-8"))
    rule, baseline = record["selected"] or record["least_bad"], record["criterion"]["baseline"]
    ref, n_ref = _run_cuts(reported, baseline, rule)
    new, n_new = _run_cuts(recheck, baseline, rule)
    rows = []
    for judge in sorted(set(ref) | set(new)):
        for key, name in METRICS:
            r, c = ref.get(judge, {}).get(key), new.get(judge, {}).get(key)
            diff = None if r is None or c is None else difference(r, c)
            rows.append({"judge": judge, "metric": name, "reported": r, "recheck": c,
                         "inside": None if diff is None else r.contains(c.value), "difference": diff,
                         "zero_width": r is not None and r.low == r.high,
                         "consistent": None if diff is None else diff.contains(0.0)})
    lines = [f"Re-check of `{rule}` vs plain: cuts on {n_new} re-check prompts against the reported run's "
             f"paired 95% intervals ({n_ref} prompts), non-toxic subset.", "",
             "| judge | metric | reported change [95% CI] | re-check change [95% CI] | inside | cut difference, "
             "points [95% CI] | consistent |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        r, c = row["reported"], row["recheck"]
        ref_txt = f"{_pct(r.value)} [{_pct(r.high)}, {_pct(r.low)}]" if r else "not judged"
        new_txt = f"{_pct(c.value)} [{_pct(c.high)}, {_pct(c.low)}]" if c else "not judged"
        d = row["difference"]
        diff_txt = f"{_points(d.value)} [{_points(d.low)}, {_points(d.high)}]" if d else "n/a"
        verdict = VERDICT[row["inside"]] + (" (zero-width)" if row["inside"] is False and row["zero_width"] else "")
        lines.append(f"| {row['judge']} | {row['metric']} | {ref_txt} | {new_txt} | {verdict} | "
                     f"{diff_txt} | {VERDICT[row['consistent']]} |")
    judged = [row for row in rows if row["inside"] is not None]
    degenerate = sum(1 for row in judged if not row["inside"] and row["zero_width"])
    lines += ["", f"{sum(row['inside'] for row in judged)} of {len(judged)} re-check cuts lie inside the reported "
              f"intervals; {sum(row['consistent'] for row in judged)} of {len(judged)} differ from the reported cut "
              "by less than the two runs' sampling error (difference interval covers 0). A positive difference: "
              "the re-check cut more."]
    if degenerate:
        lines += ["", f"Misses against a zero-width reported interval: {degenerate} (every bootstrap "
                  "resample gave the same cut, e.g. -100% when the rule left no toxic continuation): a re-check "
                  "lands inside it only by giving exactly that cut."]
    return "\n".join(lines) + "\n", rows


def main(argv: list[str]) -> None:
    text, _ = compare(argv[0], argv[1], argv[2])
    if len(argv) > 3:
        Path(argv[3]).write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main(sys.argv[1:])
