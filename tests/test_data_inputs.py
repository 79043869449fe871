"""Users' own prompt files: BOMs, missing final newlines, blank lines, bad CSV quoting, filters that leave nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rectify.data import build
from rectify.data import prompts as pr
from rectify.data.jsonl import JSONLError, read_jsonl
from rectify.data.sources import read_labelled_csv
from rectify.decoding.io import PromptFileError, read_prompts

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
BOM = "\ufeff".encode()
LONG = "one two three four five six seven eight nine ten"
PROMPTS_STATE = ".state/prompts.started.json"


def rtp_cfg(path: Path, **kw) -> dict:
    return {"source": "rtp_jsonl", "split_mode": "midpoint", "min_words": 8, "max_words": 60,
            "paths": {"train": str(path), "eval": None}, "threshold": 0.5, **kw}


def csv_cfg(path: Path, **kw) -> dict:
    return {**rtp_cfg(path), "source": "jigsaw_csv", "text_column": "body", "label_column": "rude", **kw}


# ------------------------------------------------------------------ rtp_jsonl / generate.py prompt files

def test_rtp_user_file_without_final_newline_with_blank_lines_and_bom(tmp_path):
    path = tmp_path / "mine.jsonl"
    body = b'{"prompt": {"text": "first", "toxicity": 0.9}}\n\n\n{"prompt": {"text": "last"}}'
    want = [("first", "mine.jsonl:1", 1), ("last", "mine.jsonl:4", None)]
    path.write_bytes(body + b"\n")  # blank lines count: sources are the lines a user would open
    assert [(c.text, c.source, c.label) for c in pr.load_candidates(rtp_cfg(path), "train")] == want
    path.write_bytes(BOM + body)  # Notepad's BOM, no final newline: still every record
    assert [(c.text, c.source, c.label) for c in pr.load_candidates(rtp_cfg(path), "train")] == want
    # the project's own outputs still treat a newline-less tail as an interrupted write
    with pytest.raises(JSONLError, match="interrupted"):
        read_jsonl(path)


def test_rtp_errors_name_the_real_line(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"prompt": "ok"}\n\n{"prompt": {"text": "x", "toxicity": "high"}}\n')
    with pytest.raises(ValueError, match=r'mine\.jsonl:3: "toxicity" must be a number'):
        pr.load_candidates(rtp_cfg(path), "train")
    path.write_text('{"prompt": "ok"}\n\n{"prompt": 3}\n')
    with pytest.raises(ValueError, match=r"mine\.jsonl:3: expected"):
        pr.load_candidates(rtp_cfg(path), "train")


def test_rtp_accepts_the_shapes_generate_accepts(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"text": "top level", "id": 7}\n{"prompt": "a string"}\n')
    assert [c.text for c in pr.load_candidates(rtp_cfg(path), "train")] == ["top level", "a string"]
    assert [r["prompt"]["text"] for r in read_prompts(path)] == ["top level", "a string"]


def test_generate_prompt_files_drop_a_bom(tmp_path):
    txt, jsonl = tmp_path / "p.txt", tmp_path / "p.jsonl"
    txt.write_bytes(BOM + b"Hello there\r\nYou are\r\n")
    jsonl.write_bytes(BOM + b'{"prompt": "Hello"}')
    assert [r["prompt"]["text"] for r in read_prompts(txt)] == ["Hello there", "You are"]
    assert read_prompts(jsonl) == [{"prompt": {"text": "Hello"}}]
    jsonl.write_text('{"prompt": 3}\n')
    with pytest.raises(PromptFileError, match=r"p\.jsonl:1"):
        read_prompts(jsonl)


def test_generate_prompt_file_not_utf8_names_file_and_line(tmp_path):
    for name in ("p.txt", "p.jsonl"):
        path = tmp_path / name
        path.write_bytes(b'{"prompt": "fine"}\n{"prompt": "\xff"}\n')
        with pytest.raises(PromptFileError, match=rf"{name}:2: not valid UTF-8 \(byte 0xff at column 13\)"):
            read_prompts(path)


def test_generate_prompt_file_missing_or_with_another_suffix(tmp_path):
    with pytest.raises(PromptFileError, match=r"prompts file .*nonexistent\.jsonl does not exist"):
        read_prompts(tmp_path / "nonexistent.jsonl")
    upper = tmp_path / "P.TXT"
    upper.write_text("Hello there\n\nYou are\n")  # a .TXT is text, as a .txt is
    assert read_prompts(upper) == [{"prompt": {"text": "Hello there"}, "source": "P.TXT:1"},
                                   {"prompt": {"text": "You are"}, "source": "P.TXT:3"}]
    csv = tmp_path / "p.csv"
    csv.write_text("Hello there\n")
    with pytest.raises(PromptFileError, match=r"p\.csv:1: malformed JSON .*JSON lines \(\.jsonl\) or plain text "
                                              r"\(\.txt\), one prompt per line"):
        read_prompts(csv)
    csv.write_text('{"prompt": "Hello"}\nnope\n')  # JSON lines under another name: read, errors as usual
    with pytest.raises(PromptFileError, match=r"p\.csv:2: malformed JSON \(Expecting value at column 1\)$"):
        read_prompts(csv)


# ------------------------------------------------------------------ CSV

def test_excel_csv_with_bom_and_crlf(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(BOM + f'body,rude\r\n"{LONG}",1\r\n'.encode())
    cands = pr.load_candidates(csv_cfg(path), "train")
    assert [(c.label, c.source) for c in cands] == [(1, "excel.csv:2")]
    assert cands[0].text + cands[0].continuation == LONG


@pytest.mark.parametrize("after", ['100,"quoted later",0\n', "100,plain,0\n101,more,1\n"])
def test_unclosed_quote_names_the_row_it_opens_on(tmp_path, after):
    path = tmp_path / "q.csv"
    path.write_text(f'id,body,rude\n1,"fine\nacross two lines",1\n99,"An unclosed quote,0\n{after}')
    with pytest.raises(ValueError, match=r"q\.csv:4: a quoted field that opens on this row is not closed"):
        read_labelled_csv(path, text_column="body", label_column="rude")


def test_csv_messages(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=r"c\.csv: the file is empty; expected a header row naming the columns "
                                         r"\['body', 'rude'\]"):
        read_labelled_csv(path, text_column="body", label_column="rude")
    path.write_text("body,rude\nhello, world,many\n")
    with pytest.raises(ValueError, match=r"c\.csv:2: the row has 3 fields, the header 2"):
        read_labelled_csv(path, text_column="body", label_column="rude")
    path.write_text("body,other\nhello,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rude'\].*label_column=null reads unlabelled"):
        read_labelled_csv(path, text_column="body", label_column="rude")


def test_label_column_null_reads_unlabelled_prompts(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(f"body\n{LONG}\n")
    cands = pr.load_candidates(csv_cfg(path, label_column=None), "train")
    assert [(c.label, c.source) for c in cands] == [(None, "c.csv:2")]


# ------------------------------------------------------------------ the prompts stage with nothing left

def prompts_cfg(tmp_path: Path, train: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("build_data", overrides=["debug=smoke", f"build.out_dir={tmp_path / 'out'}",
                                               "build.prompts.source=jigsaw_csv", f"build.prompts.paths.train={train}",
                                               f"build.prompts.paths.eval={train}", "build.prompts.text_column=body",
                                               "build.prompts.label_column=rude", *overrides])
    return cfg.build


def test_no_training_prompts_is_an_error_naming_the_filters(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text(f'body,rude\ntoo short,1\nalso short,0\n,1\nx,\n"{LONG} {LONG} {LONG}",0\n')
    with pytest.raises(pr.NoPromptsError, match=r"read 5 rows, of which 1 had an empty label "
                       r"\(build\.prompts\.label_column=rude.*1 had no text.*2 had fewer than "
                       r"build\.prompts\.min_words=8 words; 1 had more than build\.prompts\.max_words=20 words"):
        build.run(prompts_cfg(tmp_path, path, "build.prompts.max_words=20"), "prompts")
    assert not (tmp_path / "out" / PROMPTS_STATE).exists()
    # the fixed config runs in the same out_dir, not refused as another config's outputs
    assert build.run(prompts_cfg(tmp_path, path, "build.prompts.max_words=20", "build.prompts.min_words=2"),
                     "prompts")["prompts"]["train_prompts"] == 2


@pytest.mark.parametrize("content", ["body,rude\n", "body,rude\n\n\n"])
def test_header_only_csv_is_an_error(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(pr.NoPromptsError, match=r"empty\.csv \(build\.prompts\.paths\.train\) holds no data rows"):
        build.run(prompts_cfg(tmp_path, path), "prompts")


def test_empty_jsonl_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(pr.NoPromptsError, match=r"empty\.jsonl .* holds no data rows"):
        build.run(prompts_cfg(tmp_path, path, "build.prompts.source=rtp_jsonl"), "prompts")


def test_all_dropped_by_the_drop_rule_names_drop_nontoxic(tmp_path):
    path = tmp_path / "clean.csv"
    path.write_text(f"body,rude\n{LONG},0\n{LONG} again,0\n")
    with pytest.raises(pr.NoPromptsError, match=r"2 were non-toxic and dropped \(build\.prompts\.drop_nontoxic=1\.0"):
        build.run(prompts_cfg(tmp_path, path, "build.prompts.drop_nontoxic=1.0"), "prompts")
    out = tmp_path / "out"
    assert not (out / PROMPTS_STATE).exists() and not (out / build.PROMPTS_TRAIN).exists()


def test_empty_eval_split_warning_says_why(tmp_path, caplog):
    train, evals = tmp_path / "train.csv", tmp_path / "eval.csv"
    train.write_text(f"body,rude\n{LONG},1\n")
    evals.write_text("body,rude\ntoo short,1\n")
    with caplog.at_level(logging.WARNING):
        build.run(prompts_cfg(tmp_path, train, f"build.prompts.paths.eval={evals}"), "prompts")
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "no evaluation prompts" in warned and "1 had fewer than build.prompts.min_words=8 words" in warned
    assert "names the file" not in warned


def test_the_reward_model_finds_the_label_column_of_an_excel_csv(tmp_path):
    from rectify.scoring.reward_data import _jigsaw_label_column

    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefftoxic,comment_text\r\n1,bad\r\n".encode())
    assert _jigsaw_label_column(path, None) == "toxic"
