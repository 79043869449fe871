"""Prompts from the never-read final.csv share no comment with the splits the project uses; Debian's fortunes
give prompts from outside the comment domain; the selected rule of a select stage is read back for the check
scripts."""

from __future__ import annotations

import json

import pytest

from rectify.analysis.selected_rule import selected_rule
from rectify.data.keyword_scorer import KeywordScorer
from rectify.data.sources import read_insults
from rectify.data.unseen import fortune_quotes, unseen_comments, unseen_prompts


def test_unseen_comments_are_not_in_the_used_splits():
    used = {r.text.strip() for split in ("train", "test") for r in read_insults(split)}
    comments = unseen_comments()
    assert len(comments) > 1500 and not any(text in used for text, _ in comments)
    assert all(src.startswith("final.csv:") for _, src in comments)


def test_unseen_prompts_are_midpoint_splits_with_a_toxicity():
    rows = unseen_prompts(25, seed=3, scorer=KeywordScorer())
    assert len(rows) == 25 and [r["index"] for r in rows] == list(range(25))
    by_source = {src: text for text, src in unseen_comments()}
    for r in rows:
        assert (r["prompt"]["text"] + r["continuation"]["text"]).strip() == by_source[r["source"]]
        assert 0.0 <= r["prompt"]["toxicity"] <= 1.0 and r["split"] == "unseen"
    assert rows == unseen_prompts(25, seed=3, scorer=KeywordScorer())  # seeded
    assert rows != unseen_prompts(25, seed=4, scorer=KeywordScorer())


def test_selected_rule_reads_the_choice_or_the_least_bad(tmp_path):
    cands = [{"name": "a", "overrides": ["decoding=rectified", "decoding.tilt=8"]}, {"name": "b", "overrides": []}]
    path = tmp_path / "selected.json"
    path.write_text(json.dumps({"selected": "a", "least_bad": None, "candidates": cands}))
    assert selected_rule(path) == ("a", ["decoding=rectified", "decoding.tilt=8"])
    path.write_text(json.dumps({"selected": None, "least_bad": "b", "candidates": cands}))
    assert selected_rule(path) == ("b", [])
    path.write_text(json.dumps({"selected": None, "least_bad": None, "candidates": cands}))
    with pytest.raises(ValueError, match="no candidate"):
        selected_rule(path)


def test_an_offset_draw_continues_the_seeded_order_and_shares_no_prompt():
    first = unseen_prompts(20, seed=0, scorer=KeywordScorer())
    second = unseen_prompts(20, seed=0, scorer=KeywordScorer(), offset=20)
    both = unseen_prompts(40, seed=0, scorer=KeywordScorer())
    assert first + second == both  # same order, indices counted from the offset
    assert not {r["source"] for r in first} & {r["source"] for r in second}
    with pytest.raises(ValueError, match="offset"):
        unseen_prompts(5, offset=-1, scorer=KeywordScorer())


def test_fortune_quotes_are_single_texts_without_their_attribution():
    quotes = fortune_quotes()
    assert len(quotes) > 10000 and len({text for text, _ in quotes}) == len(quotes)
    assert all(src.startswith("fortunes/") and "\n" not in text and "\t" not in text for text, src in quotes)
    by_source = dict((src, text) for text, src in quotes)
    wisdom = [text for src, text in by_source.items() if src.startswith("fortunes/wisdom:")]
    assert "A clash of doctrine is not a disaster -- it is an opportunity." in wisdom  # an inline "--" stays
    assert not any(text.endswith("-- S. Paige, c. 1951") for text in wisdom)  # an author line goes


def test_fortune_prompts_are_midpoint_splits_of_the_quotes():
    rows = unseen_prompts(20, seed=1, scorer=KeywordScorer(), source="fortunes")
    by_source = {src: text for text, src in fortune_quotes()}
    assert len(rows) == 20
    for r in rows:
        assert (r["prompt"]["text"] + r["continuation"]["text"]).strip() == by_source[r["source"]]
    with pytest.raises(ValueError, match="unknown unseen source"):
        unseen_prompts(5, scorer=KeywordScorer(), source="reddit")
