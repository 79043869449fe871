"""Our reward model: data splits and options, length buckets, and a smoke training run whose export loads
as ``scorer=reward_model``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.scoring.reward_data import length_buckets, load_splits

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


@given(st.lists(st.integers(1, 200), max_size=120), st.integers(1, 9), st.integers(1, 5), st.booleans(),
       st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_length_buckets_partition_the_data(lengths, batch_size, bucket_batches, shuffle, seed):
    batches = length_buckets(lengths, batch_size, bucket_batches=bucket_batches, seed=seed, shuffle=shuffle)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(0 < len(b) <= batch_size for b in batches)
    assert batches == length_buckets(lengths, batch_size, bucket_batches=bucket_batches, seed=seed, shuffle=shuffle)


def test_buckets_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=640).tolist()
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    plain = [list(range(i, i + 32)) for i in range(0, 640, 32)]
    bucketed = length_buckets(lengths, 32, bucket_batches=20, seed=0, shuffle=True)
    assert padded(bucketed) < 0.7 * padded(plain)


def test_insults_splits_are_9_to_1_and_disjoint():
    s = load_splits({"source": "insults", "seed": 0})
    assert abs(len(s.val) / (len(s.train) + len(s.val)) - 0.1) < 0.01
    assert not {r.source for r in s.train} & {r.source for r in s.val}
    assert all(r.source.startswith("test_with_solutions.csv") for r in s.test)
    dropped = load_splits({"source": "insults", "seed": 0, "drop_nontoxic": 0.3})
    n_clean = lambda sp: sum(1 - r.label for r in sp.train + sp.val)  # noqa: E731
    n_toxic = lambda sp: sum(r.label for r in sp.train + sp.val)  # noqa: E731
    assert n_toxic(dropped) == n_toxic(s)
    assert 0.6 < n_clean(dropped) / n_clean(s) < 0.8


@pytest.mark.parametrize("column,values", [("toxic", ["1", "0"]), ("target", ["0.8", "0.1"])])
def test_jigsaw_csv_with_toxic_or_target(tmp_path, column, values):
    path = tmp_path / "train.csv"
    lines = ["id,comment_text," + column] + [f"{i},comment number {i},{values[i % 2]}" for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    s = load_splits({"source": "jigsaw", "path": str(path), "test_ratio": 0.25, "val_ratio": 0.1})
    assert (len(s.train), len(s.val), len(s.test)) == (27, 3, 10)
    for r in s.train + s.val + s.test:
        assert r.label == (int(r.text.split()[-1]) % 2 == 0)


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="data.path"):
        load_splits({"source": "jigsaw"})
    with pytest.raises(ValueError, match="drop_nontoxic"):
        load_splits({"source": "insults", "drop_nontoxic": 1.0})
    bad = tmp_path / "x.csv"
    bad.write_text("comment_text,score\nhi,1\n")
    with pytest.raises(ValueError, match="toxic"):
        load_splits({"source": "jigsaw", "path": str(bad)})


def test_smoke_training_exports_a_working_scorer(tmp_path):
    from hydra import compose, initialize_config_dir

    from rectify.scoring import build_scorer
    from rectify.scoring.reward_training import train_reward_model

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_reward_model", overrides=[
            "debug=smoke", f"paths.output_dir={tmp_path}", "reward.data.max_train=16", "reward.data.max_val=8",
            "reward.data.max_test=12", "reward.model.max_length=16", "reward.logger=null",
        ])
    metrics = train_reward_model(cfg.reward, tmp_path)
    assert 0.0 <= metrics["val_auc"] <= 1.0 and 0.0 <= metrics["test_auc"] <= 1.0
    export = tmp_path / "export"
    assert (export / "config.json").is_file() and (export / "tokenizer.json").is_file()
    saved = json.loads((export / "reward_model.json").read_text())
    assert saved["metrics"]["test_auc"] == metrics["test_auc"]
    scorer = build_scorer({"_target_": "rectify.scoring.reward_model.RewardModelScorer", "path": str(export)})
    scores = scorer(["you are an idiot", "nice weather today", ""])
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scorer(["nice weather today"]), scores[1:2], atol=1e-5)


def test_missing_export_dir_says_how_to_make_one(tmp_path):
    from rectify.scoring import build_scorer

    with pytest.raises(FileNotFoundError, match="train_reward_model"):
        build_scorer("reward_model", path=str(tmp_path / "nope"))
