"""data.train_fraction: a seeded share of the training prompts, whole prompt groups, 1.0 = unchanged."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.training.data import ValueDataModule, prompt_groups, subset_by_prompt
from rectify.training.synthetic import write_synthetic

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def tok(gpt2_tok):
    tok = copy.deepcopy(gpt2_tok)  # the session fixture stays untouched
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def data(tmp_path_factory, tok):
    """96 training rows over the 8 synthetic prompts (with prompt_len), 16 validation rows."""
    return write_synthetic(tmp_path_factory.mktemp("subset"), 96, 16, tokenizer=tok)


def _dm(tok, data, **kw) -> ValueDataModule:
    dm = ValueDataModule(tok, str(data[0]), str(data[1]), batch_size=8, **kw)
    dm.setup("fit")
    return dm


def _prompt(item: dict) -> tuple:
    return tuple(item["input_ids"][: item["prompt_len"]])


def _items(n_prompts: int, per_prompt: int) -> list[dict]:
    """Rows of ``n_prompts`` distinct 2-token prompts, interleaved (prompt i of row j: i = j % n_prompts)."""
    return [{"input_ids": [j % n_prompts, 1000 + j % n_prompts, 5000 + j], "reward": -float(j % 2), "prompt_len": 2}
            for j in range(n_prompts * per_prompt)]


def test_fraction_one_is_the_identity(tok, data):
    full = _dm(tok, data)
    same = _dm(tok, data, train_fraction=1.0, subset_seed=7)
    assert same.train_set.items == full.train_set.items  # same rows, same order
    items = _items(5, 3)
    assert subset_by_prompt(items, 1.0, seed=3)[0] is items
    assert full.subset_stats == {"prompts": 8, "prompts_total": 8, "rows": 96, "rows_total": 96,
                                 "toxic": sum(it["reward"] < -0.5 for it in full.train_set.items)}


def test_fraction_keeps_whole_prompt_groups_in_order(tok, data, caplog):
    full = _dm(tok, data)
    caplog.set_level("INFO", logger="rectify.training.data")
    half = _dm(tok, data, train_fraction=0.5)
    rows_of = {}
    for it in full.train_set.items:
        rows_of.setdefault(_prompt(it), []).append(it)
    kept = {_prompt(it) for it in half.train_set.items}
    assert len(rows_of) == 8 and len(kept) == 4
    # every row of a kept prompt, none of the others, in the file's order
    assert half.train_set.items == [it for it in full.train_set.items if _prompt(it) in kept]
    assert half.subset_stats["rows"] == sum(len(rows_of[p]) for p in kept)
    assert half.val_set.items == full.val_set.items  # validation untouched
    assert f"kept 4 of 8 prompts, {half.subset_stats['rows']} of 96 rows" in caplog.text


def test_subset_is_seeded():
    items = _items(40, 3)
    kept = {seed: subset_by_prompt(items, 0.25, seed)[0] for seed in range(4)}
    assert subset_by_prompt(items, 0.25, 0)[0] == kept[0]  # same seed, same subset
    assert kept[0] != kept[1]  # another seed, another subset
    for k in kept.values():
        assert len({it["input_ids"][0] for it in k}) == 10 and len(k) == 30


def test_rows_without_prompt_len_are_their_own_group():
    items = [{**it, "prompt_len": None} for it in _items(2, 5)]
    assert prompt_groups(items) == [[i] for i in range(10)]
    kept, n, total = subset_by_prompt(items, 0.5, 0)
    assert (n, total, len(kept)) == (5, 10, 5)
    # mixed: rows with the same prompt group together, the others stand alone
    mixed = _items(2, 2) + [{"input_ids": [0, 1000, 1], "reward": 0.0, "prompt_len": None}]
    assert prompt_groups(mixed) == [[0, 2], [1, 3], [4]]


def test_small_fraction_keeps_at_least_one_prompt():
    kept, n, total = subset_by_prompt(_items(3, 2), 0.01, 0)
    assert (n, total, len(kept)) == (1, 3, 2)


@pytest.mark.parametrize("bad", [0, 0.0, -0.25, 1.5, math.nan, "0.5", True, None])
def test_bad_fraction_raises(tok, data, bad):
    with pytest.raises(ValueError, match=r"data.train_fraction must be a number in \(0, 1\]"):
        ValueDataModule(tok, str(data[0]), str(data[1]), train_fraction=bad)
    with pytest.raises(ValueError, match="train_fraction"):
        subset_by_prompt(_items(2, 2), bad)


def test_config_override_reaches_the_datamodule(tok, data, tmp_path):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "+experiment=smollm2",
                                          f"data.train_path={data[0]}", f"data.val_path={data[1]}",
                                          "data.train_fraction=0.25", "data.subset_seed=3"])
    plain = OmegaConf.to_container(cfg.data, resolve=True)
    assert plain["train_fraction"] == 0.25 and plain["subset_seed"] == 3
    dm = ValueDataModule(tok, **plain)
    dm.setup("fit")
    assert dm.subset_stats["prompts"] == 2 and dm.subset_stats["prompts_total"] == 8
    default = OmegaConf.load(CONFIGS / "data" / "value.yaml")
    assert default.train_fraction == 1.0 and default.subset_seed == 0
