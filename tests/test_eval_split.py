"""The dev / test split of the held-out prompts: deterministic, disjoint, complete, stratified, recorded, and
added to data dirs built before it existed without touching their prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rectify.data import build
from rectify.data import eval_split as es
from rectify.data.jsonl import read_jsonl, write_jsonl_atomic
from rectify.data.stages import Stage

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


def eval_file(d: Path, n: int = 40, toxic_every: int = 4) -> list[dict]:
    recs = [{"prompt": {"text": f"prompt {i}", "toxicity": 0.9 if i % toxic_every == 0 else 0.1},
             "source": f"test_with_solutions.csv:{i + 2}", "split": "eval", "index": i} for i in range(n)]
    write_jsonl_atomic(d / es.EVAL, recs)
    return recs


def test_split_is_deterministic_disjoint_complete_and_stratified(tmp_path):
    recs = eval_file(tmp_path)
    cfg = es.SplitConfig(dev_fraction=0.5, seed=0)
    dev, test = es.split_indices(recs, cfg)
    assert (dev, test) == es.split_indices(recs, cfg)
    assert not set(dev) & set(test) and sorted(dev + test) == list(range(len(recs)))
    assert dev == sorted(dev) and test == sorted(test)
    tox = {i for i, r in enumerate(recs) if r["prompt"]["toxicity"] >= 0.5}
    assert len(tox & set(dev)) == len(tox & set(test)) == 5  # 10 toxic prompts, half in each
    assert es.split_indices(recs, es.SplitConfig(seed=1)) != (dev, test)
    quarter, _ = es.split_indices(recs, es.SplitConfig(dev_fraction=0.25))
    assert len(quarter) == round(0.25 * 10) + round(0.25 * 30)


def test_files_hold_the_lines_and_the_record_says_how(tmp_path):
    recs = eval_file(tmp_path)
    rec = es.write_eval_split(tmp_path, {"dev_fraction": 0.5, "seed": 3})
    dev, test = read_jsonl(tmp_path / es.DEV), read_jsonl(tmp_path / es.TEST)
    saved = json.loads((tmp_path / es.RECORD).read_text())
    assert saved == rec and (saved["seed"], saved["dev_fraction"], saved["n_prompts"]) == (3, 0.5, 40)
    assert [recs[i] for i in saved["dev"]["indices"]] == dev and [recs[i] for i in saved["test"]["indices"]] == test
    assert saved["dev"]["ids"] == [r["source"] for r in dev]
    assert saved["dev"]["strata"] == saved["test"]["strata"] == {"nontoxic": 15, "toxic": 5}


def test_ensure_writes_once_and_again_only_when_stale(tmp_path):
    eval_file(tmp_path)
    es.ensure_eval_split(tmp_path, None)
    stamp = (tmp_path / es.DEV).stat().st_mtime_ns
    es.ensure_eval_split(tmp_path, {"dev_fraction": 0.5, "seed": 0})  # the defaults: current
    assert (tmp_path / es.DEV).stat().st_mtime_ns == stamp
    assert es.ensure_eval_split(tmp_path, {"seed": 1})["seed"] == 1  # another config: re-split
    eval_file(tmp_path, n=20)  # another eval file: re-split
    assert es.ensure_eval_split(tmp_path, {"seed": 1})["n_prompts"] == 20
    with pytest.raises(ValueError, match="dev_fraction"):
        es.SplitConfig.from_any({"dev_fraction": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        es.SplitConfig.from_any({"fraction": 0.5})


def test_a_finished_prompts_stage_gets_the_split_without_regenerating(tmp_path):
    """Data built before the split existed: the prompts stage is skipped (same fingerprint) and splits."""
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(config_name="build_data", overrides=["debug=smoke", f"build.out_dir={tmp_path}"])
    pipe = build.Pipeline(cfg.build)
    no_split = dict(pipe.cfg, prompts={k: v for k, v in pipe.cfg["prompts"].items() if k != "eval_split"})
    assert build.Pipeline(no_split).fp["prompts"] == pipe.fp["prompts"]  # old data keeps its fingerprint
    st = Stage(tmp_path, "prompts", pipe.fp["prompts"], [build.PROMPTS_TRAIN, build.PROMPTS_EVAL])
    st.begin()
    eval_file(tmp_path, n=6)
    write_jsonl_atomic(tmp_path / build.PROMPTS_TRAIN, [])
    st.finish({"train_prompts": 0, "eval_prompts": 6})
    before = (tmp_path / build.PROMPTS_EVAL).read_bytes()
    assert pipe.prompts()["skipped"]  # nothing scored or regenerated (the scorer is never built)
    assert (tmp_path / build.PROMPTS_EVAL).read_bytes() == before
    rec = json.loads((tmp_path / es.RECORD).read_text())
    assert rec["dev"]["n"] + rec["test"]["n"] == 6 and rec["dev"]["n"] == 3
