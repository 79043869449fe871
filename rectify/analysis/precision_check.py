"""Does bf16 move quality? Compare an fp32 recipe with the bf16 one on the same prompts (issue 13).

Two checks, each printed as a markdown table:

* Q_D: the dead-end AUC (``val/auc_min_q``) of a Q_D trained on fp32-generated data in fp32
  (``trainer.precision=32-true``, fp32 frozen-layer cache) against the bf16 recipe's, each scored on both
  builds' validation trajectories (the same prompts); the target is a gap of at most ``AUC_TOLERANCE`` (0.02).
* Decoding: the same rule with the same Q_D and seeds, decoded with generator and Q_D in fp32 and in bf16
  (``generations.eval.json`` of each), for each recipe's Q_D; the bf16 run's Toxicity Probability (per judge)
  and perplexity should sit inside the fp32 run's 95% bootstrap interval.

    python -m rectify.analysis.precision_check --fp32-qd A/value_model --bf16-qd B/value_model \
        --fp32-val A_DATA/val.json --bf16-val B_DATA/val.json \
        --pair "demo Q_D" FP32_DECODING/generations.eval.json BF16_DECODING/generations.eval.json [--subset nontoxic]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

AUC_TOLERANCE = 0.02


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def eval_rows(path: str | Path, subset: str) -> dict[str, dict]:
    """Per scorer, the evaluation row of ``subset`` in a ``generations.eval.json``."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
    out = {r["scorer"]: r for r in rows if r.get("subset") == subset}
    if not out:
        raise ValueError(f"{path}: no rows for subset {subset!r}")
    return out


def interval(row: dict, key: str) -> Interval | None:
    if row.get(key) is None or row.get(f"{key}_ci_low") is None:
        return None
    return Interval(float(row[key]), float(row[f"{key}_ci_low"]), float(row[f"{key}_ci_high"]))


def auc_table(auc: dict[tuple[str, str], float], tolerance: float = AUC_TOLERANCE) -> str:
    """Markdown: rows = Q_D recipes, columns = whose validation trajectories; the bf16 - fp32 gap per column.

    The builds split train / validation by a hash of each prompt (rectify.data.assemble.split_prompts), so both
    validation files hold the same prompts and neither Q_D trained on them: each column compares the two Q_Ds on
    the same trajectories, which separates the precision's effect from the sampling noise between two builds."""
    vals = ["fp32", "bf16"]
    lines = ["| Q_D recipe \\ validation trajectories of | fp32 build | bf16 build |", "|---|---|---|"]
    for q, what in (("fp32", "fp32 data, 32-true, fp32 cache"), ("bf16", "bf16 data, bf16-mixed, bf16 cache")):
        lines.append(f"| {q} ({what}) | " + " | ".join(f"{auc[(q, v)]:.4f}" for v in vals) + " |")
    gaps = {v: auc[("bf16", v)] - auc[("fp32", v)] for v in vals}
    worst = max(abs(g) for g in gaps.values())
    verdict = "within" if worst <= tolerance else "outside"
    lines.append("")
    lines.append(f"bf16 - fp32: {gaps['fp32']:+.4f} on the fp32 build's trajectories, {gaps['bf16']:+.4f} on the bf16 "
                 f"build's: {verdict} the {tolerance} tolerance.")
    return "\n".join(lines)


def decoding_table(pairs: list[tuple[str, dict[str, dict], dict[str, dict]]]) -> str:
    """Per pair (a label, the fp32-decoding run's rows, the bf16-decoding run's rows): Toxicity Probability per
    judge and perplexity, and whether the bf16 value lies in the fp32 run's interval."""
    lines = ["| Q_D | metric | fp32 decoding [95% CI] | bf16 decoding [95% CI] | bf16 inside fp32's interval |",
             "|---|---|---|---|---|"]
    for label, fp32, bf16 in pairs:
        scorers = sorted(set(fp32) & set(bf16))
        for scorer in scorers:
            a, b = interval(fp32[scorer], "tox_prob"), interval(bf16[scorer], "tox_prob")
            if a and b:
                lines.append(f"| {label} | Tox.prob, {scorer} | {a} | {b} | {'yes' if a.contains(b.value) else 'no'} |")
        a, b = interval(fp32[scorers[0]], "ppl"), interval(bf16[scorers[0]], "ppl")
        if a and b:
            lines.append(f"| {label} | perplexity ({fp32[scorers[0]].get('judge', 'judge')}) | {a.value:.1f} [{a.low:.1f}, "
                         f"{a.high:.1f}] | {b.value:.1f} [{b.low:.1f}, {b.high:.1f}] | "
                         f"{'yes' if a.contains(b.value) else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32-qd", help="the fp32 recipe's saved Q_D dir (the AUC table needs all four paths)")
    ap.add_argument("--bf16-qd")
    ap.add_argument("--fp32-val", help="the fp32 build's val.json")
    ap.add_argument("--bf16-val")
    ap.add_argument("--pair", nargs=3, action="append", required=True, metavar=("LABEL", "FP32_EVAL", "BF16_EVAL"),
                    help="the same rule and Q_D decoded in fp32 and in bf16: their generations.eval.json files")
    ap.add_argument("--subset", default="nontoxic")
    args = ap.parse_args(argv)
    paths = (args.fp32_qd, args.bf16_qd, args.fp32_val, args.bf16_val)
    if any(paths) and not all(paths):
        ap.error("the AUC table needs --fp32-qd, --bf16-qd, --fp32-val and --bf16-val together")
    if all(paths):
        from rectify.analysis.qd_auc import auc_matrix  # loads Lightning and transformers: only when run

        auc = auc_matrix({"fp32": args.fp32_qd, "bf16": args.bf16_qd}, {"fp32": args.fp32_val, "bf16": args.bf16_val})
        print(auc_table(auc))
        print()
    print(decoding_table([(label, eval_rows(a, args.subset), eval_rows(b, args.subset)) for label, a, b in args.pair]))


if __name__ == "__main__":
    main()
