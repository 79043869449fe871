"""Q_D learning curve: validation AUC of runs trained on a share of the training prompts (data.train_fraction).

Answers whether data is still Q_D's bottleneck: if the AUC keeps rising from 1/4 to 1/2 to all of the data,
more data should help. Reads what ``scripts/train.py`` leaves in each run dir: the CSV logger's
``csv/version_*/metrics.csv`` (``val/auc_min_q`` per validation epoch), the Hydra log (the datamodule's
"train subset" line: prompts, rows and toxic rows kept) and ``value_model/calibration.json``.

    python -m rectify.analysis.learning_curve 0.25=outputs/learning_curve/frac_0.25 0.5=... 1.0=...
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

AUC_KEY = "val/auc_min_q"
SUBSET_RE = re.compile(r"train subset \(.*\): kept (\d+) of (\d+) prompts, (\d+) of (\d+) rows, (\d+) toxic")
LOAD_RE = re.compile(r"\] - (.+): (\d+) trajectories, (\d+) ending in a dead end")


@dataclass
class CurvePoint:
    fraction: str
    run_dir: Path
    prompts: int | None = None
    prompts_total: int | None = None
    rows: int | None = None
    toxic: int | None = None
    best_auc: float | None = None
    best_epoch: int | None = None
    final_auc: float | None = None
    calibration: dict | None = None


def metrics_csv(run_dir: str | Path) -> Path | None:
    """The run's latest CSV-logger metrics file (a rerun in the same dir adds a version)."""
    files = list(Path(run_dir).glob("csv/version_*/metrics.csv"))
    if not files:
        return None
    def version(p: Path) -> int:
        v = p.parent.name.removeprefix("version_")
        return int(v) if v.isdigit() else -1

    return max(files, key=version)


def read_auc(path: str | Path, key: str = AUC_KEY) -> tuple[float | None, int | None, float | None]:
    """``(best, epoch of the best, final)`` of ``key`` over the validation rows of a metrics.csv."""
    values: list[tuple[float, int | None]] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            cell = (row.get(key) or "").strip()
            if not cell:
                continue
            v = float(cell)
            if math.isnan(v):
                continue
            epoch = (row.get("epoch") or "").strip()
            values.append((v, int(float(epoch)) if epoch else None))
    if not values:
        return None, None, None
    best = max(values, key=lambda t: t[0])
    return best[0], best[1], values[-1][0]


def _train_path(run_dir: Path) -> str | None:
    cfg = run_dir / ".hydra" / "config.yaml"
    if not cfg.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return str(OmegaConf.load(cfg).data.train_path)
    except Exception:  # an unresolvable interpolation, no data node: fall back to the log's first file
        return None


def read_counts(run_dir: str | Path) -> dict[str, int]:
    """Prompts / rows / toxic rows the run trained on, from its Hydra log (the last fit in it).

    Runs from before ``train_fraction`` existed have no "train subset" line: their rows and toxic rows come
    from the datamodule's "N trajectories, K ending in a dead end" line for the train file (no prompt count).
    """
    run_dir = Path(run_dir)
    subset, loads = None, []
    for log in sorted(run_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if m := SUBSET_RE.search(line):
                subset = m
            elif m := LOAD_RE.search(line):
                loads.append(m)
    if subset:
        p, pt, r, _rt, t = (int(x) for x in subset.groups())
        return {"prompts": p, "prompts_total": pt, "rows": r, "toxic": t}
    if loads:
        train = _train_path(run_dir)
        match = [m for m in loads if m.group(1) == train] or loads[:1]  # the train file is loaded first
        return {"rows": int(match[-1].group(2)), "toxic": int(match[-1].group(3))}
    return {}


def read_calibration(run_dir: str | Path) -> dict | None:
    """The ``stats`` of ``value_model/calibration.json`` (Brier raw / calibrated, pairs), if it has one."""
    path = Path(run_dir) / "value_model" / "calibration.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("stats") or None


def collect(fraction: str, run_dir: str | Path) -> CurvePoint:
    run_dir = Path(run_dir)
    if run_dir.name == "value_model":  # a Q_D dir given instead of its run dir
        run_dir = run_dir.parent
    pt = CurvePoint(fraction, run_dir, **read_counts(run_dir))
    if (path := metrics_csv(run_dir)) is not None:
        pt.best_auc, pt.best_epoch, pt.final_auc = read_auc(path)
    pt.calibration = read_calibration(run_dir)
    return pt


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _i(v: int | None) -> str:
    return "n/a" if v is None else str(v)


def _is_all(fraction: str) -> bool:
    try:
        return float(fraction) == 1.0
    except ValueError:
        return False


def curve_table(points: list[CurvePoint]) -> str:
    """Markdown table, one row per fraction. A run without a prompt count (trained before train_fraction
    existed) on all of the data gets the total the other runs counted, marked with ``*``."""
    totals = {p.prompts_total for p in points if p.prompts_total is not None}
    lines = ["| fraction | training prompts | rows | toxic rows | best val AUC (epoch) | final val AUC "
             "| calibration: Brier raw -> calibrated (val steps) |",
             "|---|---|---|---|---|---|---|"]
    starred = False
    for p in points:
        prompts = _i(p.prompts)
        if p.prompts is None and len(totals) == 1 and _is_all(p.fraction):
            prompts, starred = f"{next(iter(totals))}*", True
        best = _f(p.best_auc) + (f" ({p.best_epoch})" if p.best_epoch is not None else "")
        cal = p.calibration
        cal_s = (f"{cal['brier_raw']:.4f} -> {cal['brier_calibrated']:.4f} ({cal.get('pairs', 'n/a')})"
                 if cal and "brier_raw" in cal and "brier_calibrated" in cal else "n/a")
        lines.append(f"| {p.fraction} | {prompts} | {_i(p.rows)} | {_i(p.toxic)} | {best} | {_f(p.final_auc)} "
                     f"| {cal_s} |")
    if starred:
        lines.append("\n\\* all training prompts, as counted by the subset runs (that run's log has no count)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", metavar="FRACTION=RUN_DIR")
    args = ap.parse_args(argv)
    points = []
    for arg in args.runs:
        fraction, sep, run_dir = arg.partition("=")
        if not sep:
            ap.error(f"expected FRACTION=RUN_DIR, got {arg!r}")
        points.append(collect(fraction, run_dir))
    print(curve_table(points))


if __name__ == "__main__":
    main()
