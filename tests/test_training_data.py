"""Value-data reading: errors name file:line, skipping counts, tokenization and padding."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from rectify.training.data import (
    TokenizedValueDataset,
    ValueCollator,
    ValueDataError,
    ValueDataModule,
    read_value_jsonl,
)
from rectify.training.synthetic import write_synthetic

GOOD = {"text": "you are kind", "reward": [0], "prompt_len": 1}


def _write(tmp_path, lines, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("bad, message", [
    ('{"text": "a", "reward": [0]', "malformed JSON"),
    ({"reward": [0]}, "missing field 'text'"),
    ({"text": "hello"}, "missing field 'reward'"),
    ({"text": "   ", "reward": [0]}, "non-empty string"),
    ({"text": "hello", "reward": [-2.0]}, "outside [q_min, q_max]"),
    ({"text": "hello", "reward": [0.5]}, "outside [q_min, q_max]"),
    ({"text": "hello", "reward": [0, -1]}, "one terminal reward"),
    ({"text": "hello", "reward": ["x"]}, "finite number"),
    ({"text": "hello", "reward": [0], "prompt_len": -1}, "prompt_len"),
    ({"text": "hello", "reward": [0], "prompt_chars": 6}, "prompt_chars"),
    ({"text": "hello", "reward": [0], "prompt_chars": 2.0}, "prompt_chars"),
    ([1, 2], "JSON object"),
])
def test_bad_lines_name_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, "", GOOD, bad, GOOD])
    with pytest.raises(ValueDataError) as info:
        read_value_jsonl(path)
    assert f"{path}:4:" in str(info.value) and message in str(info.value)


def test_skip_bad_lines_counts(tmp_path, caplog):
    path = _write(tmp_path, [GOOD, "not json", {"text": "x", "reward": [3]}, GOOD])
    records, skipped = read_value_jsonl(path, skip_bad_lines=True)
    assert len(records) == 2 and skipped == 2
    assert records[1].where == f"{path}:4"
    assert "skipped 2 bad lines" in caplog.text


def test_a_line_that_is_not_utf8_is_named_or_skipped(tmp_path, caplog):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(GOOD).encode() + b"\n"
    path.write_bytes(good * 2 + b'{"text": "caf\xe9", "reward": [0]}\n' + good)
    with pytest.raises(ValueDataError, match=r"latin1\.jsonl:3: not valid UTF-8 \(byte 0xe9 at column 14\)"):
        read_value_jsonl(path)
    records, skipped = read_value_jsonl(path, skip_bad_lines=True)
    assert skipped == 1 and [r.where for r in records] == [f"{path}:1", f"{path}:2", f"{path}:4"]
    assert f"skipping {path}:3: not valid UTF-8" in caplog.text


def test_malformed_json_at_a_lines_end_names_its_column(tmp_path):
    path = _write(tmp_path, [GOOD, '{"text": "a", "reward": [0]'])
    with pytest.raises(ValueDataError, match=r"d\.jsonl:2: malformed JSON \(Expecting ',' delimiter at column 28\)"):
        read_value_jsonl(path)


def test_too_short_text_named(tmp_path, gpt2_tok):
    tok = gpt2_tok
    path = _write(tmp_path, [GOOD, {"text": "hi", "reward": [0]}])
    records, _ = read_value_jsonl(path)
    with pytest.raises(ValueDataError, match=f"{path}:2: text has 1 token"):
        TokenizedValueDataset(records, tok, max_length=32)
    ds = TokenizedValueDataset(records, tok, max_length=32, skip_bad_lines=True)
    assert len(ds) == 1 and ds.skipped == 1


def test_the_datamodule_says_each_files_skipped_total(tmp_path, gpt2_tok, caplog):
    """Unreadable lines are counted by the reader, too-short texts after tokenizing: one line gives the total."""
    path = _write(tmp_path, [GOOD, "not json", {"text": "hi", "reward": [0]}, GOOD])
    dm = ValueDataModule(gpt2_tok, str(path), str(path), skip_bad_lines=True)
    with caplog.at_level("WARNING", logger="rectify.training.data"):
        dm.setup("fit")
    assert f"{path}: skipped 2 lines in all (1 unreadable, 1 too short for a trajectory)" in caplog.text
    assert len(dm.train_set) == 2 and dm.skipped == 4  # train and val read the same file


def test_a_prompt_longer_than_its_text_is_named(tmp_path, gpt2_tok, caplog):
    path = _write(tmp_path, [GOOD, {"text": "oops, a char count", "reward": [0], "prompt_len": 99}])
    records, _ = read_value_jsonl(path)
    ds = TokenizedValueDataset(records, gpt2_tok, max_length=32)
    assert len(ds) == 2   # kept: a warning, not an error
    assert f"{path}:2: prompt_len 99 is more than the text's 5 tokens" in caplog.text
    assert f"{path}:1" not in caplog.text


def test_collate_pads_with_mask_not_token_ids(tmp_path, smollm2_tok):
    tok = smollm2_tok
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    path = _write(tmp_path, [{"text": "one two three four five", "reward": [-1], "prompt_len": 2},
                             {"text": "six seven", "reward": [0], "prompt_len": 1}])
    records, _ = read_value_jsonl(path)
    ds = TokenizedValueDataset(records, tok, max_length=32)
    batch = ValueCollator(pad)([ds[0], ds[1]])
    n0, n1 = len(ds[0]["input_ids"]), len(ds[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(-1).tolist() == [n0, n1]
    assert batch["reward"].tolist() == [-1.0, 0.0] and batch["prompt_len"].tolist() == [2, 1]
    # no silent BOS: the ids are exactly the tokenizer's default call
    assert ds[0]["input_ids"] == tok("one two three four five")["input_ids"]
    # a batch where one line lacks prompt_len has none
    batch = ValueCollator(pad)([ds[0], {**ds[1], "prompt_len": None}])
    assert batch["prompt_len"] is None


def test_truncation(tmp_path, gpt2_tok):
    path = _write(tmp_path, [{"text": "word " * 50, "reward": [0]}])
    ds = TokenizedValueDataset(read_value_jsonl(path)[0], gpt2_tok, max_length=8)
    assert len(ds[0]["input_ids"]) == 8


def test_datamodule_on_synthetic(tmp_path, gpt2_tok):
    tok = copy.deepcopy(gpt2_tok)  # the session fixture stays untouched
    tok.pad_token = tok.eos_token
    train, val = write_synthetic(tmp_path, 10, 6, tokenizer=tok)
    dm = ValueDataModule(tok, str(train), str(val), batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "reward", "prompt_len"}
    assert batch["input_ids"].dtype == torch.long and len(dm.val_set) == 6
    assert set(batch["reward"].tolist()) <= {0.0, -1.0}


def test_a_missing_value_file_names_config_keys_that_exist(tmp_path):
    """The hint once named data.synthetic=true, which train.py refuses (not in struct)."""
    import re
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from rectify.training.data import read_value_jsonl

    with pytest.raises(FileNotFoundError) as err:
        read_value_jsonl(tmp_path / "nope.json")
    key = re.search(r"takes (\S+)=true", str(err.value)).group(1)
    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        assert compose("train", overrides=[f"{key}=true"]).synthetic_data.enabled is True


PROMPTS_AND_CONTINUATIONS = [("You are such a ", "jerk and a liar"), ("What a stup", "id thing to say"),
                             ("1234567 numbers", " in a row"), ("Très élégant café", " au lait"),
                             ("    indented code", " here")]  # the last three split differently in the two


@pytest.mark.parametrize("built_with", ["smollm2", "gpt2"])
def test_prompt_len_is_counted_with_the_datamodules_tokenizer(tmp_path, gpt2_tok, smollm2_tok, caplog, built_with):
    """Rows carry prompt_chars: a Q_D trained on data whose prompt_len another tokenizer counted (GPT-2 Q_D on
    data built for SmolLM2) gets its own tokenizer's counts, the ones the data pipeline gives it, and a warning."""
    from rectify.data.assemble import AssembleConfig, assemble, token_counter

    builder = {"smollm2": smollm2_tok, "gpt2": gpt2_tok}[built_with]
    recs = [{"prompt": {"text": p}, "source": f"s:{i}", "generations": [{"text": c, "toxicity": 0.9 * (i % 2)}]}
            for i, (p, c) in enumerate(PROMPTS_AND_CONTINUATIONS)]
    cfg = AssembleConfig(mode="all", val_fraction=0.0, drop_clean=0.0)
    rows, _, _ = assemble(recs, cfg, token_counter(builder))
    assert all(r["prompt_chars"] == len(p) for r, (p, _) in zip(rows, PROMPTS_AND_CONTINUATIONS, strict=True))
    path = _write(tmp_path, rows)
    records, _ = read_value_jsonl(path)
    with caplog.at_level("WARNING", logger="rectify.training.data"):
        ds = TokenizedValueDataset(records, gpt2_tok, max_length=64)
    own, _, _ = assemble(recs, cfg, token_counter(gpt2_tok))  # what building the data for GPT-2 gives
    assert [it["prompt_len"] for it in ds.items] == [r["prompt_len"] for r in own]
    differ = sum(a["prompt_len"] != b["prompt_len"] for a, b in zip(rows, own, strict=True))
    assert (built_with == "smollm2") == (differ > 0)  # the two tokenizers split these prompts differently
    warned = [r.getMessage() for r in caplog.records if "prompt_chars" in r.getMessage()]
    assert (warned != []) == (differ > 0) and (not warned or warned[0].startswith(f"{differ} of {len(rows)} rows"))


def test_rows_without_prompt_chars_keep_their_prompt_len(tmp_path, gpt2_tok):
    path = _write(tmp_path, [{"text": "What a stupid thing", "reward": [0], "prompt_len": 3}])
    records, _ = read_value_jsonl(path)
    assert TokenizedValueDataset(records, gpt2_tok, max_length=64).items[0]["prompt_len"] == 3
