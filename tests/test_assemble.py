"""Assembly of the value data on hand-made labelled records: the original's modes, drop rule, rewards, split."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.data.assemble import AssembleConfig, assemble, reward_of, select, split_prompts, token_counter
from tests.conftest import words


def rec(i: int, prompt: str, scores: list[float]) -> dict:
    return {"prompt": {"text": prompt, "toxicity": 0.1}, "source": f"train.csv:{i}",
            "generations": [{"text": f" c{i}_{j}", "toxicity": s} for j, s in enumerate(scores)]}


RECORDS = [
    rec(1, "you are a", [0.1, 0.9, 0.5, 0.2]),   # toxic continuations, 0.5 counts as toxic
    rec(2, "the weather is", [0.0, 0.1, 0.49]),   # all clean
    rec(3, "go away you", [0.7, 0.3]),
]


def rows_by_prompt(rows):
    out = {}
    for r in rows:
        out.setdefault(r["text"].split(" c")[0], []).append(r)
    return out


def test_mode_all_format_and_rewards():
    train, val, summary = assemble(RECORDS, AssembleConfig(mode="all", val_fraction=0.0), words)
    assert val == []
    assert [set(r) for r in train] == [{"text", "reward", "prompt_len", "prompt_chars"}] * 9
    assert train[0] == {"text": "you are a c1_0", "reward": [0], "prompt_len": 3, "prompt_chars": 9}
    assert [r["reward"][0] for r in train] == [0, -1, -1, 0, 0, 0, 0, -1, 0]
    assert summary["rows_train"] == 9 and summary["toxic_train"] == 3
    assert summary["toxic_share_train"] == pytest.approx(3 / 9)


def test_mode_most_keeps_most_and_least_toxic():
    train, _, _ = assemble(RECORDS, AssembleConfig(mode="most", val_fraction=0.0), words)
    got = {p: [r["text"].split()[-1] for r in rs] for p, rs in rows_by_prompt(train).items()}
    assert got == {"you are a": ["c1_1", "c1_0"], "the weather is": ["c2_2", "c2_0"], "go away you": ["c3_0", "c3_1"]}
    single = select([{"text": "x", "toxicity": 0.3}], "most", 2, random.Random(0))
    assert single == [{"text": "x", "toxicity": 0.3}]


def test_mode_sample_k_is_seeded_and_a_subset():
    cfg = AssembleConfig(mode="sample", k=2, val_fraction=0.0, seed=3)
    a, _, _ = assemble(RECORDS, cfg, words)
    b, _, _ = assemble(RECORDS, cfg, words)
    assert a == b
    per = rows_by_prompt(a)
    assert [len(v) for v in per.values()] == [2, 2, 2]
    all_rows, _, _ = assemble(RECORDS, AssembleConfig(mode="all", val_fraction=0.0), words)
    assert all(r in all_rows for r in a)
    with pytest.raises(ValueError, match="unknown assemble.mode"):
        assemble(RECORDS, AssembleConfig(mode="best"), words)


def test_drop_clean_only_drops_all_clean_prompts():
    cfg = AssembleConfig(mode="all", drop_clean=1.0, val_fraction=0.0)
    train, _, summary = assemble(RECORDS, cfg, words)
    assert set(rows_by_prompt(train)) == {"you are a", "go away you"}
    assert summary["prompts_dropped_clean"] == 1
    many = [rec(i, f"p{i} x", [0.1, 0.2]) for i in range(400)]
    _, _, s = assemble(many, AssembleConfig(mode="all", drop_clean=0.3, val_fraction=0.0, seed=1), words)
    assert 80 <= s["prompts_dropped_clean"] <= 160  # ~30% of 400
    _, _, s2 = assemble(many, AssembleConfig(mode="all", drop_clean=0.3, val_fraction=0.0, seed=1), words)
    assert s2 == s  # the same seed drops the same prompts


def test_threshold_and_soft_rewards():
    assert reward_of(0.5, 0.5, "binary") == -1
    assert reward_of(0.4999, 0.5, "binary") == 0
    assert reward_of(0.3, 0.2, "binary") == -1
    assert reward_of(0.3, 0.5, "soft") == pytest.approx(-0.3)
    train, _, summary = assemble(RECORDS, AssembleConfig(mode="all", threshold=0.8, val_fraction=0.0), words)
    assert summary["toxic_train"] == 1


def test_empty_continuations_are_skipped_and_unlabelled_rejected():
    recs = [rec(1, "a b", [0.9, 0.1])]
    recs[0]["generations"][1]["text"] = "  "
    train, _, summary = assemble(recs, AssembleConfig(mode="all", val_fraction=0.0), words)
    assert len(train) == 1 and summary["empty_continuations_skipped"] == 1
    del recs[0]["generations"][0]["toxicity"]
    with pytest.raises(ValueError, match="unlabelled generations"):
        assemble(recs, AssembleConfig(), words)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=0, max_value=60), seed=st.integers(0, 5), frac=st.sampled_from([0.1, 0.25, 0.5]))
def test_split_is_by_prompt(n, seed, frac):
    recs = [rec(i, f"prompt{i} words", [0.2, 0.8, 0.6]) for i in range(n)]
    train, val, summary = assemble(recs, AssembleConfig(mode="all", val_fraction=frac, seed=seed), words)
    train_p, val_p = set(rows_by_prompt(train)), set(rows_by_prompt(val))
    assert not train_p & val_p
    assert len(train_p | val_p) == n
    assert summary["prompts_val"] == len(split_prompts([r["source"] for r in recs], frac, seed)) == len(val_p)
    if n >= 2:
        assert 1 <= len(val_p) <= n - 1
        assert abs(len(val_p) - n * frac) <= 1
    assert len(train) + len(val) == 3 * n


def test_prompt_len_counts_qd_tokens(smollm2_tok):
    count = token_counter(smollm2_tok)
    prompt = "You are such a"
    train, _, _ = assemble([rec(1, prompt, [0.2])], AssembleConfig(mode="all", val_fraction=0.0), count)
    ids = smollm2_tok(train[0]["text"])["input_ids"]
    assert train[0]["prompt_len"] == len(smollm2_tok(prompt)["input_ids"]) == 4
    assert smollm2_tok.decode(ids[:train[0]["prompt_len"]]) == prompt


@pytest.mark.parametrize("prompt, continuation, inside", [("You are such a ", "jerk", "You are such a"),
                                                         ("What a stup", "id thing", "What a")])
def test_prompt_len_at_a_token_merge(smollm2_tok, prompt, continuation, inside):
    """The prompt's last characters merge with the continuation's first (a trailing space, a word cut in two):
    the merged token is an action, so prompt_len counts the text's tokens that end inside the prompt."""
    count = token_counter(smollm2_tok)
    text = prompt + continuation
    ids = smollm2_tok(text)["input_ids"]
    n = count([prompt], [text])[0]
    assert n == len(smollm2_tok(inside)["input_ids"]) < len(smollm2_tok(prompt)["input_ids"])
    assert smollm2_tok.decode(ids[:n]) == inside and smollm2_tok.decode(ids[n:]).startswith(" ")
    assert count([prompt], [prompt]) == [len(smollm2_tok(prompt)["input_ids"])]  # nothing after the prompt


def test_split_does_not_depend_on_which_prompts_the_clean_drop_keeps():
    """Two builds of the same prompts whose labels differ (so the drop keeps other prompts) validate on the same
    prompts: none of one build's validation prompts is a training prompt of the other."""
    n = 200
    labels = random.Random(0)
    a = [rec(i, f"prompt{i} words", [labels.random() * 0.6]) for i in range(n)]
    b = [rec(i, f"prompt{i} words", [labels.random() * 0.6]) for i in range(n)]
    cfg = AssembleConfig(mode="all", val_fraction=0.2, drop_clean=0.5, seed=3)
    (ta, va, sa), (tb, vb, sb) = (assemble(r, cfg, words) for r in (a, b))
    assert sa["prompts_kept"] != sb["prompts_kept"]
    train_a, val_a = set(rows_by_prompt(ta)), set(rows_by_prompt(va))
    train_b, val_b = set(rows_by_prompt(tb)), set(rows_by_prompt(vb))
    assert not val_a & train_b and not val_b & train_a
    assert val_a & val_b
