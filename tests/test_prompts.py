"""Prompt extraction: the RealToxicityPrompts midpoint split, first-N-tokens prompts, the drop rule, resume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.data import prompts as pr
from rectify.data.jsonl import read_jsonl

word = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=8)
space = st.sampled_from([" ", "  ", "\n", " \n "])


@settings(max_examples=80, deadline=None)
@given(ws=st.lists(word, min_size=1, max_size=70), seps=st.lists(space, min_size=70, max_size=70))
def test_midpoint_split_rules(ws, seps):
    text = "".join(w + s for w, s in zip(ws, seps[: len(ws)], strict=True))
    got = pr.split_midpoint(text, min_words=8, max_words=60)
    n = len(ws)
    if n < 8 or n > 60:
        assert got is None
        return
    prompt, cont = got
    assert prompt + cont == text.strip()
    assert prompt.split() == ws[: n // 2]
    assert cont.split() == ws[n // 2:]
    assert prompt == prompt.strip() and cont[0].isspace()


def test_midpoint_examples():
    text = "one two three four five six seven eight nine"
    assert pr.split_midpoint(text) == ("one two three four", " five six seven eight nine")
    assert pr.split_midpoint("too short to split here ok") is None
    assert pr.split_midpoint(" ".join(["w"] * 61)) is None
    assert pr.split_midpoint(" ".join(["w"] * 60)) is not None


def test_first_tokens(gpt2_tok):
    text = "This is a comment that is clearly longer than five tokens of GPT-2."
    prompt, rest = pr.split_first_tokens(text, gpt2_tok, 5)
    assert gpt2_tok(prompt)["input_ids"] == gpt2_tok(text)["input_ids"][:5]
    assert prompt + rest == text
    assert pr.split_first_tokens("Too short.", gpt2_tok, 5) is None


def test_toxic_by_and_drop_rule():
    assert pr.is_toxic(1, 0.1, toxic_by="label", threshold=0.5)
    assert not pr.is_toxic(1, 0.1, toxic_by="score", threshold=0.5)
    assert pr.is_toxic(0, 0.5, toxic_by="either", threshold=0.5)
    assert pr.is_toxic(None, 0.7, toxic_by="label", threshold=0.5)  # no label: fall back to the score
    with pytest.raises(ValueError):
        pr.is_toxic(0, 0.1, toxic_by="vibes", threshold=0.5)
    assert all(pr.keep_prompt(f"f:{i}", True, 1.0, 0) for i in range(50))
    kept = [pr.keep_prompt(f"f:{i}", False, 0.9, 0) for i in range(2000)]
    assert 140 <= sum(kept) <= 260  # ~10% of non-toxic prompts survive
    assert kept == [pr.keep_prompt(f"f:{i}", False, 0.9, 0) for i in range(2000)]


def test_insults_splits_are_disjoint_sources():
    cfg = {"source": "insults", "split_mode": "midpoint", "min_words": 8, "max_words": 60,
           "insults_splits": {"train": "train", "eval": "test"}}
    train = pr.load_candidates(cfg, "train")
    evals = pr.load_candidates(cfg, "eval")
    assert len(train) > 1000 and len(evals) > 1000
    assert {c.source.split(":")[0] for c in train} == {"train.csv"}
    assert {c.source.split(":")[0] for c in evals} == {"test_with_solutions.csv"}
    assert all(8 <= len((c.text + c.continuation).split()) <= 60 for c in train)
    assert {c.label for c in train} == {0, 1}


def test_rtp_jsonl_source(tmp_path):
    path = tmp_path / "rtp.jsonl"
    path.write_text('{"prompt": {"text": "So I said", "toxicity": 0.8}, "continuation": {"text": " hi"}}\n'
                    '{"prompt": {"text": "Then", "toxicity": null}}\n')
    cands = pr.load_candidates({"source": "rtp_jsonl", "split_mode": "midpoint", "min_words": 8, "max_words": 60,
                                "paths": {"train": str(path), "eval": None}, "threshold": 0.5}, "train")
    assert [(c.text, c.label, c.source, c.source_toxicity) for c in cands] == [
        ("So I said", 1, "rtp.jsonl:1", 0.8), ("Then", None, "rtp.jsonl:2", None)]
    path.write_text('{"prompt": 3}\n')
    with pytest.raises(ValueError, match=r"rtp\.jsonl:1"):
        pr.load_candidates({"source": "rtp_jsonl", "split_mode": "midpoint", "min_words": 8, "max_words": 60,
                            "paths": {"train": str(path)}, "threshold": 0.5}, "train")


class CountingScorer:
    """Scores by text length; optionally 'crashes' after some calls, like a killed process."""

    name = "len"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, texts):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return np.array([min(1.0, len(t) / 40) for t in texts])


CANDS = [pr.Candidate(text=f"prompt number {i}" + "!" * (i % 30), continuation=" rest", label=i % 3 == 0,
                      source=f"train.csv:{i + 2}") for i in range(200)]
KW = dict(split="train", drop_nontoxic=0.5, toxic_by="either", threshold=0.5, max_prompts=120, seed=7,
          batch_size=16)


def test_killed_prompts_stage_resumes_without_duplicates(tmp_path):
    full = tmp_path / "full.jsonl"
    n_full = pr.write_prompts(CANDS, full, CountingScorer(), **KW)
    assert n_full == 120
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        pr.write_prompts(CANDS, part, CountingScorer(fail_after=3), **KW)
    data = part.read_bytes()
    part.write_bytes(data[:-25])  # and the last write was cut mid-line
    assert pr.write_prompts(CANDS, part, CountingScorer(), **KW) == 120
    assert part.read_bytes() == full.read_bytes()
    recs = read_jsonl(full)
    assert len({r["source"] for r in recs}) == 120
    assert all(r["split"] == "train" and 0 <= r["prompt"]["toxicity"] <= 1 for r in recs)
    # a finished file is not extended by a rerun
    assert pr.write_prompts(CANDS, full, CountingScorer(fail_after=0), **KW) == 120


def test_drop_applies_to_train_only(tmp_path):
    kw = {**KW, "max_prompts": None, "drop_nontoxic": 1.0}
    train = read_jsonl(tmp_path / "t.jsonl") if pr.write_prompts(CANDS, tmp_path / "t.jsonl", CountingScorer(), **kw) else []
    assert train and all(r["label"] or r["prompt"]["toxicity"] >= 0.5 for r in train)
    n_eval = pr.write_prompts(CANDS, tmp_path / "e.jsonl", CountingScorer(), **{**kw, "split": "eval"})
    assert n_eval == len(CANDS)


def test_jigsaw_csv_source(tmp_path):
    path = tmp_path / "train.csv"
    long = "this comment has quite a few words in it so that it can be split"
    path.write_text(f'id,comment_text,toxic\n1,"{long}",1\n2,"short one",0\n3,"{long} again",0.2\n')
    cfg = {"source": "jigsaw_csv", "split_mode": "midpoint", "min_words": 8, "max_words": 60,
           "paths": {"train": str(path), "eval": None}, "text_column": "comment_text", "label_column": "toxic",
           "threshold": 0.5}
    cands = pr.load_candidates(cfg, "train")
    assert [(c.label, c.source) for c in cands] == [(1, "train.csv:2"), (0, "train.csv:4")]
    assert cands[0].text == "this comment has quite a few words"  # 7 of 15 words
    assert pr.load_candidates(cfg, "eval") == []
