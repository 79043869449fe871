"""The learning-curve table from fake run dirs (metrics.csv, Hydra log, calibration.json)."""

from __future__ import annotations

import json

from rectify.analysis.learning_curve import collect, curve_table, main, metrics_csv, read_auc

HEADER = "epoch,step,train/loss_step,val/auc_final_q,val/auc_min_q,val/loss\n"


def _run(root, name, aucs, log_lines, calibration=None, version=0):
    run = root / name
    (run / "csv" / f"version_{version}").mkdir(parents=True)
    rows = [",10,0.3,,,"]  # a training-step row: no validation metrics
    rows += [f"{e},{10 * (e + 1)},,0.5,{a},0.2" for e, a in enumerate(aucs)]
    (run / "csv" / f"version_{version}" / "metrics.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (run / "train_smollm2.log").write_text("".join(f"[2026-12-02 00:00:00,000][rectify.training.data][INFO] - {x}\n"
                                                   for x in log_lines))
    if calibration is not None:
        (run / "value_model").mkdir()
        (run / "value_model" / "calibration.json").write_text(json.dumps({"x": [0], "y": [0], "stats": calibration}))
    return run


def test_read_auc_best_and_final(tmp_path):
    run = _run(tmp_path, "r", [0.70, 0.81, 0.78], [])
    assert read_auc(metrics_csv(run)) == (0.81, 1, 0.78)
    # a rerun in the same dir: the latest version wins
    (run / "csv" / "version_1").mkdir()
    (run / "csv" / "version_1" / "metrics.csv").write_text(HEADER + "0,5,,0.5,0.66,0.2\n")
    assert read_auc(metrics_csv(run)) == (0.66, 0, 0.66)
    assert read_auc(metrics_csv(_run(tmp_path, "empty", [], []))) == (None, None, None)


def test_table(tmp_path, capsys):
    quarter = _run(tmp_path, "frac_0.25", [0.7, 0.75], [
        "data/offline/train.json: 8586 trajectories, 1146 ending in a dead end",
        "train subset (train_fraction=0.25, subset_seed=0): kept 344 of 1376 prompts, 2150 of 8586 rows, 290 toxic",
        "data/offline/val.json: 1512 trajectories, 192 ending in a dead end",
    ], calibration={"pairs": 9000, "brier_raw": 0.2, "brier_calibrated": 0.1})
    # an older full-data run: no subset line, rows from the load line, no calibration
    full = _run(tmp_path, "full", [0.8, 0.84, 0.83], [
        "data/offline/train.json: 8586 trajectories, 1146 ending in a dead end",
        "data/offline/val.json: 1512 trajectories, 192 ending in a dead end",
    ])
    pts = [collect("0.25", quarter), collect("1.0", full)]
    assert (pts[0].prompts, pts[0].rows, pts[0].toxic) == (344, 2150, 290)
    assert (pts[1].prompts, pts[1].rows, pts[1].toxic) == (None, 8586, 1146)
    table = curve_table(pts).splitlines()
    assert table[2] == "| 0.25 | 344 | 2150 | 290 | 0.7500 (1) | 0.7500 | 0.2000 -> 0.1000 (9000) |"
    assert table[3] == "| 1.0 | 1376* | 8586 | 1146 | 0.8400 (1) | 0.8300 | n/a |"
    assert table[-1].startswith("\\* all training prompts")
    main([f"0.25={quarter}", f"1.0={full}"])
    assert capsys.readouterr().out.splitlines()[2] == table[2]


def test_missing_run_gives_na(tmp_path):
    pt = collect("0.5", tmp_path / "nothing_here")
    assert curve_table([pt]).splitlines()[2] == "| 0.5 | n/a | n/a | n/a | n/a | n/a | n/a |"
