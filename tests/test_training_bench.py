"""train_step benchmark: row format and equal losses (fast, in-process); the speed/memory claim (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rectify.benchmarks import train_step

CFG = Path(__file__).resolve().parents[1] / "configs" / "benchmark" / "train_step.yaml"


def tiny_cfg():
    cfg = OmegaConf.to_container(OmegaConf.load(CFG))
    cfg["backbone"]["random_init"].update(hidden_size=32, num_heads=2, intermediate_size=64)
    cfg.update(batch_size=2, seq_len=8, warmup=1, steps=1)
    return cfg


def test_rows_same_batch_same_loss():
    cfg = tiny_cfg()
    rows = {h: train_step.measure(cfg, h) for h in ("gathered", "full")}
    for head, row in rows.items():
        assert row["bench"] == "train_step" and row["head"] == head
        assert row["step_s"] > 0 and row["peak_rss_mb"] > 0 and row["vocab"] == 49152
    assert abs(rows["gathered"]["loss"] - rows["full"]["loss"]) < 1e-5
    bf16 = train_step.measure(cfg, "gathered", "bf16-mixed")
    assert bf16["precision"] == "bf16-mixed" and rows["gathered"]["precision"] == "32-true"
    assert abs(bf16["loss"] - rows["gathered"]["loss"]) < 0.05 * max(1.0, abs(rows["gathered"]["loss"]))


@pytest.mark.slow
def test_gathered_head_faster_and_smaller_smollm2_sized():
    cfg = OmegaConf.load(CFG)
    cfg.precisions = ["32-true"]
    rows = list(train_step.run(cfg))
    g, f, ratio = rows
    assert (g["hidden"], g["inner"], g["vocab"]) == (576, 1152, 49152)
    assert ratio["step_ratio"] <= 0.75
    assert g["step_rss_delta_mb"] < f["step_rss_delta_mb"] and g["peak_rss_mb"] < f["peak_rss_mb"]
