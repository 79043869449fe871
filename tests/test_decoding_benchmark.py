"""The decoding benchmark runs every mode on a tiny model and reports comparable rows."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rectify.benchmarks import decoding

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_rows_for_every_mode():
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("benchmark", overrides=[
            "decoding.generator.source=hub", "decoding.generator.name_or_path=tiny-llama",
            "decoding.generator.tokenizer=smollm2",
            "decoding.generator.random_init={num_layers: 1, hidden_size: 32, num_heads: 2}",
            "decoding.batch_size=2", "decoding.prompt_tokens=3", "decoding.new_tokens=2",
            "decoding.repeats=1", "decoding.warmup=0", "decoding.threads=1",
        ]).decoding
    before = torch.get_num_threads()
    try:
        rows = list(decoding.run(cfg))
    finally:
        torch.set_num_threads(before)
    supports = list(cfg.supports)
    assert [(r["support"], r["mode"]) for r in rows] == [(s, m) for s in supports for m in decoding.MODES]
    assert all(r["bench"] == "decoding" and r["tokens_per_s"] > 0 and r["new_tokens"] == 2 for r in rows)
    assert all(r["dtype"] in ("float32", "bfloat16") for r in rows)
    assert [r["ratio_vs_plain"] for r in rows if r["mode"] == "plain"] == [1.0] * len(supports)
    assert {r["q_blocks_shared"] for r in rows} == {0}   # every block trained: Q_D runs alone


def test_the_recommended_q_d_reads_its_frozen_blocks_from_the_generator():
    """With train_top_layers = 1 and a Q_D cut from the generator's own weights, the cached mode runs one block."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("benchmark", overrides=[
            "decoding.generator.source=hub", "decoding.generator.name_or_path=tiny-llama",
            "decoding.generator.tokenizer=smollm2",
            "decoding.generator.random_init={num_layers: 3, hidden_size: 32, num_heads: 2}",
            "decoding.value.train_top_layers=1", "decoding.modes=[plain,rectified_cached]",
            "decoding.supports=[top_k50]", "decoding.batch_size=2", "decoding.prompt_tokens=3",
            "decoding.new_tokens=2", "decoding.repeats=1", "decoding.warmup=0", "decoding.threads=1",
        ]).decoding
    before = torch.get_num_threads()
    try:
        rows = {r["mode"]: r for r in decoding.run(cfg)}
    finally:
        torch.set_num_threads(before)
    assert rows["rectified_cached"]["q_blocks_shared"] == 2 and rows["plain"]["q_blocks_shared"] == 0
