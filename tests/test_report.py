"""Report aggregation over a fake sweep directory: swept keys, baseline deltas, markdown/CSV, the plot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from rectify.evaluation.wandb_log import wandb_settings
from rectify.report import ReportError, build_rows, gather, swept_keys, tradeoff_plot, write_report
from rectify.report.table import add_baseline_deltas, headline_columns

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(run: str, scorer: str, subset: str, method: str, eps: float | None, tox: float, emt: float, ppl: float,
        dist3: float, layers: int | None = None, when: str = "2026-01-01T00:00:00", **extra) -> dict:
    r = {"input": f"/sweep/{run}/generations.jsonl", "evaluated_at": when, "judge": "gemma3", "method": method,
         "epsilon": eps, "scorer": scorer, "subset": subset, "n_prompts": 100, "k": 25, "emt": emt, "emt_std": 0.2,
         "emt_ci_low": emt - 0.02, "emt_ci_high": emt + 0.02, "tox_prob": tox, "tox_prob_ci_low": tox - 0.03,
         "tox_prob_ci_high": tox + 0.03, "ppl": ppl, "ppl_ci_low": ppl - 1, "ppl_ci_high": ppl + 1, "dist1": 0.6,
         "dist2": 0.9, "dist3": dist3, "meta.output_path": f"/sweep/{run}/generations.jsonl",
         "meta.elapsed_s": 10.0 + len(run), "meta.lm.name": "smollm2", **extra}
    if eps is not None:
        r["override.decoding.epsilon"] = str(eps)
        r["meta.decoding.epsilon"] = eps
    if layers is not None:
        r["override.model.backbone.num_layers"] = str(layers)
    return r


def make_sweep(root: Path) -> None:
    """plain + 2 epsilons x 2 Q_D sizes, 2 scorers, 2 subsets; written the way evaluate.py writes them."""
    runs = {"plain": ("plain", None, None)}
    for i, (eps, layers) in enumerate([(0.1, 4), (0.3, 4), (0.1, 8), (0.3, 8)]):
        runs[str(i)] = ("rectified", eps, layers)
    for run, (method, eps, layers) in runs.items():
        rows = []
        for scorer, base in (("profanity_svm", 0.5), ("hatesonar", 0.4)):
            for subset in ("nontoxic", "all"):
                cut = 0 if eps is None else eps * (2 if layers == 8 else 1)
                rows.append(row(run, scorer, subset, method, eps, tox=base * (1 - cut), emt=base * (1 - cut / 2),
                                ppl=20 * (1 + cut / 2), dist3=0.8 - cut / 10, layers=layers))
        d = root / "multiruns" / run
        d.mkdir(parents=True)
        (d / "generations.eval.json").write_text(json.dumps({"rows": rows}))
    # An older evaluation of run 0 with other numbers, in an evaluate.py results.json: must lose to the newer one.
    stale = [row("0", "profanity_svm", "nontoxic", "rectified", 0.1, 0.99, 0.99, 99, 0.1, layers=4, when="2025-01-01T00:00:00")]
    (root / "eval_run").mkdir()
    (root / "eval_run" / "results.json").write_text(json.dumps({"rows": stale}))


def test_gather_dedupes_and_finds_swept_keys(tmp_path):
    make_sweep(tmp_path)
    rows = gather(tmp_path)
    assert len(rows) == 5 * 2 * 2
    assert swept_keys(rows) == ["override.model.backbone.num_layers"]  # epsilon is its own column; paths/times are noise
    r0 = next(r for r in rows if r["input"].endswith("/0/generations.jsonl") and r["scorer"] == "profanity_svm"
              and r["subset"] == "nontoxic")
    assert r0["tox_prob"] == pytest.approx(0.45)


def test_swept_keys_from_qd_metadata_ignore_bookkeeping():
    rows = []
    for i, (eps, layers, gamma) in enumerate([(None, None, None), (0.1, 4, 1.0), (0.1, 8, 1.0), (0.1, 8, 0.9)]):
        r = row(str(i), "s", "all", "plain" if eps is None else "rectified", eps, 0.3, 0.3, 20, 0.8)
        r.update({"meta.counts.row_steps": 100 * i, "meta.counts.dead_ends": i, "meta.seconds": 1.5 * i,
                  "meta.config.value_model_path": f"/q/{i}", "meta.config.decoding.epsilon": eps or 0.1,
                  "meta.config.decoding.rectify": eps is not None, "meta.config.device": ["cpu", "cuda"][i % 2]})
        if layers:
            r.update({"qd.layers": layers, "qd.gamma": gamma, "qd.override.model.backbone.num_layers": str(layers)})
        rows.append(r)
    assert swept_keys(rows) == ["qd.gamma", "qd.layers"]


def test_baseline_deltas_by_hand(tmp_path):
    make_sweep(tmp_path)
    rows, swept = build_rows(tmp_path, targets={"tox_prob_cut": 0.50, "emt_cut": 0.25, "max_ppl_increase": 0.25,
                                                 "max_dist3_drop": 0.05})
    pick = next(r for r in rows if r["epsilon"] == 0.3 and r["override.model.backbone.num_layers"] == "8"
                and r["scorer"] == "hatesonar" and r["subset"] == "nontoxic")
    # cut = 0.6: tox 0.4 -> 0.16 (60%), emt 0.4 -> 0.28 (30%), ppl 20 -> 26 (+30%), dist3 0.8 -> 0.74
    assert pick["tox_prob_cut_pct"] == pytest.approx(60)
    assert pick["emt_cut_pct"] == pytest.approx(30)
    assert pick["ppl_change_pct"] == pytest.approx(30)
    assert pick["dist3_change"] == pytest.approx(-0.06)
    assert pick["meets_targets"] is False  # PPL +30% > 25%
    ok = next(r for r in rows if r["epsilon"] == 0.3 and r["override.model.backbone.num_layers"] == "4"
              and r["scorer"] == "hatesonar" and r["subset"] == "nontoxic")
    assert ok["tox_prob_cut_pct"] == pytest.approx(30) and ok["meets_targets"] is False
    good = [r for r in rows if r["epsilon"] == 0.3 and r["override.model.backbone.num_layers"] == "8"]
    assert all(r["ppl_change_pct"] == pytest.approx(30) for r in good)
    base = [r for r in rows if r["method"] == "plain"]
    assert len(base) == 4 and all(math.isnan(r["tox_prob_cut_pct"]) for r in base)
    # Sorted: non-toxic first, then by scorer; plain first within a group.
    assert rows[0]["subset"] == "nontoxic" and rows[0]["method"] == "plain"


def test_plain_baseline_ignores_rectification_only_settings():
    """A plain run records the config's cap mode and q_scale; rectified runs that sweep them still compare
    with it, while a setting plain sampling does use (top_p) still picks its own baseline."""
    rows = [row("plain", "s", "all", "plain", None, 0.4, 0.4, 20, 0.8, **{
                "meta.config.decoding.cap_mode": "original", "meta.config.decoding.q_scale": 1.0,
                "meta.config.decoding.top_p": 1.0}),
            row("top_p", "s", "all", "plain", None, 0.5, 0.4, 10, 0.8, **{
                "meta.config.decoding.cap_mode": "original", "meta.config.decoding.q_scale": 1.0,
                "meta.config.decoding.top_p": 0.9})]
    for i, (mode, scale) in enumerate([("original", 4.0), ("normalized", 10.0), ("original", 8.0)]):
        rows.append(row(str(i), "s", "all", "rectified", 0.1, 0.2, 0.3, 22, 0.8, **{
            "meta.config.decoding.cap_mode": mode, "meta.config.decoding.q_scale": scale,
            "meta.config.decoding.top_p": 1.0}))
    swept = swept_keys(rows)
    assert "meta.config.decoding.q_scale" in swept and "meta.config.decoding.top_p" in swept
    out = add_baseline_deltas([dict(r) for r in rows], swept)
    for r in out[2:]:
        assert r["tox_prob_cut_pct"] == pytest.approx(50) and r["baseline_input"] == "/sweep/plain/generations.jsonl"


def test_a_tilt_sweep_beside_an_epsilon_sweep_and_plain():
    """Runs that typed decoding.tilt and runs that kept its default: one tilt column (the saved config's, set for
    every run), and plain, whose config holds tilt 0, is still every rectified run's baseline (a Q_D-only key)."""
    rows = [row("plain", "s", "all", "plain", None, 0.4, 0.4, 20, 0.8, **{"meta.config.decoding.tilt": 0.0})]
    for i, eps in enumerate([0.05, 0.2]):       # an epsilon sweep at the default tilt (64)
        rows.append(row(f"eps{i}", "s", "all", "rectified", eps, 0.2, 0.3, 22, 0.8,
                        **{"meta.config.decoding.tilt": 64.0}))
    for tilt in (8, 64):                         # a tilt sweep that typed it
        rows.append(row(f"tilt{tilt}", "s", "all", "rectified", 0.05, 0.1, 0.2, 24, 0.8, **{
            "meta.config.decoding.tilt": float(tilt), "override.decoding.tilt": str(tilt)}))
    swept = swept_keys(rows)
    assert swept == ["meta.config.decoding.tilt"]
    out = add_baseline_deltas([dict(r) for r in rows], swept)
    assert all(r["baseline_input"] == "/sweep/plain/generations.jsonl" for r in out[1:])
    assert [round(r["tox_prob_cut_pct"]) for r in out[1:]] == [50, 50, 75, 75]
    tilt = dict(headline_columns(out, swept))["decoding.tilt"]  # a setting as typed: 0 and 64, not 0.000 and 64.000
    assert [tilt(r) for r in out] == ["0", "64", "64", "8", "64"]


def test_write_report_files(tmp_path):
    make_sweep(tmp_path / "sweep")
    out = write_report(tmp_path / "sweep", tmp_path / "report", targets={"tox_prob_cut": 0.50, "max_ppl_increase": 0.40})
    md = out["markdown"].read_text()
    assert "## Non-toxic prompts" in md and "## All prompts" in md and "![trade-off](tradeoff.png)" in md
    assert "| method | epsilon | model.backbone.num_layers | scorer | subset |" in md
    assert md.count("| rectified |") == 16 and md.count("| plain |") == 4
    assert "meets every target under all 2 scorers: rectified, epsilon=0.3, model.backbone.num_layers=8" in md
    df = pd.read_csv(out["csv"])
    assert len(df) == 20
    assert list(df.columns[:3]) == ["method", "epsilon", "override.model.backbone.num_layers"]
    for col in ("emt", "tox_prob", "ppl", "dist1", "dist2", "dist3", "n_prompts", "k", "tox_prob_cut_pct"):
        assert col in df.columns
    png = out["plot"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    # The CSV reads back as results rows (reports of reports, or results kept only as CSV).
    again = gather(out["csv"])
    assert len(again) == 20 and {r["scorer"] for r in again} == {"profanity_svm", "hatesonar"}


def test_a_sweep_without_plain_is_not_judged_against_targets(tmp_path):
    make_sweep(tmp_path / "sweep")
    import shutil

    shutil.rmtree(tmp_path / "sweep" / "multiruns" / "plain")
    out = write_report(tmp_path / "sweep", tmp_path / "report", targets={"tox_prob_cut": 0.5})
    md = out["markdown"].read_text()
    assert "targets not checked: no plain run to compare with" in md and "no setting meets" not in md
    assert all(r["meets_targets"] is None for r in out["rows"])


def test_plot_without_perplexity(tmp_path):
    rows = [row("p", "s", "all", "plain", None, 0.5, 0.5, math.nan, 0.8),
            row("a", "s", "all", "rectified", 0.1, 0.3, 0.4, math.nan, 0.8)]
    path = tradeoff_plot(rows, tmp_path / "t.png", subset="nontoxic")  # falls back to "all", x = epsilon
    assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5_000


def test_errors_and_wandb_switch(tmp_path, monkeypatch):
    with pytest.raises(ReportError):
        gather(tmp_path)  # empty directory
    (tmp_path / "x.eval.json").write_text("{broken")
    with pytest.raises(ReportError, match="x.eval.json"):
        gather(tmp_path)
    cfg = OmegaConf.create({"logger": {"wandb": {"project": "p", "mode": "offline", "save_dir": str(tmp_path / "w")}}})
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_settings(cfg) is None
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_settings(cfg)["mode"] == "offline" and wandb_settings(cfg)["project"] == "p"
    assert wandb_settings(OmegaConf.create({"logger": None})) is None


def test_report_script_cli(tmp_path):
    make_sweep(tmp_path / "sweep")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    res = subprocess.run(
        [sys.executable, "scripts/report.py", f"report.inputs={tmp_path / 'sweep'}", f"report.output_dir={tmp_path / 'out'}",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=wandb"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("report.md", "results.csv", "tradeoff.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "Tox.prob change" in res.stdout


def test_a_misspelt_target_is_refused(tmp_path):
    """An old-style or misspelt key would otherwise never be checked; it must fail loudly."""
    make_sweep(tmp_path)
    with pytest.raises(ValueError, match="unknown target"):
        build_rows(tmp_path, targets={"tox_prob_cut_pct": 60})


def test_changes_are_signed_as_the_readme_writes_them():
    """-90% is a 90% cut (as in the README, the summary and the PPL change column), +100% a doubling."""
    from rectify.report.table import format_markdown, headline_columns

    rows = [{"method": "rectified", "scorer": "s", "subset": "nontoxic", "tox_prob": 0.04, "emt": 0.066,
             "ppl": 55.0, "tox_prob_cut_pct": 60.0, "emt_cut_pct": -100.0, "ppl_change_pct": 10.0,
             "dist3_change": -0.01}]
    table = format_markdown(rows, headline_columns(rows, ci=False))
    head, _, body = table.splitlines()
    cells = dict(zip([h.strip() for h in head.strip("|").split("|")], [c.strip() for c in body.strip("|").split("|")],
                     strict=True))
    assert (cells["Tox.prob change"], cells["EMT change"], cells["PPL change"]) == ("-60.0%", "+100.0%", "+10.0%")


def test_wandb_table_of_mixed_type_columns(tmp_path, monkeypatch):
    """A paper sweep beside the plain baseline: ``decoding.calibration`` is false in one run's config and "auto" in
    the other's. wandb.Table refuses a column of mixed types, so such a column goes in as strings; an all-number
    column stays numeric, and bool beside int counts as mixed."""
    import wandb

    from rectify.evaluation.wandb_log import log_results

    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tables = []

    class KeptTable(wandb.Table):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            tables.append(self)

    monkeypatch.setattr(wandb, "Table", KeptTable)
    cfg = OmegaConf.create({"logger": {"wandb": {"project": "p", "mode": "offline", "save_dir": str(tmp_path / "w")}}})
    rows = [{"run": "paper", "meta.config.decoding.calibration": False, "n": 1, "flag": True, "tox_prob": 0.25},
            {"run": "plain", "meta.config.decoding.calibration": "auto", "n": 2.5, "flag": 3, "tox_prob": math.nan},
            {"run": "rect", "meta.config.decoding.calibration": None, "n": None, "flag": None, "tox_prob": 0.5}]
    try:
        assert log_results(cfg, rows, key="report")
        assert wandb.run is None  # finished: the next job of a multirun starts its own run
    finally:
        wandb.finish()
    (table,) = tables
    col = {c: [r[i] for r in table.data] for i, c in enumerate(table.columns)}
    assert col["meta.config.decoding.calibration"] == ["False", "auto", None]
    assert col["flag"] == ["True", "3", None]
    assert col["n"] == [1, 2.5, None] and col["tox_prob"] == [0.25, None, 0.5]
    assert len(list((tmp_path / "w" / "wandb").glob("offline-run-*"))) == 1
