"""Dead-end truncation: the episode of a toxic continuation ends at the first word the labeller calls toxic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.data.assemble import AssembleConfig, assemble
from rectify.data.dead_ends import dead_end_cuts, mark_dead_ends, word_prefix_ends
from rectify.data.keyword_scorer import KeywordScorer
from tests.conftest import words

SCORER = KeywordScorer()  # P(toxic) = 1 - 0.5 ** hits: one listed word scores 0.5


def test_cut_is_just_after_the_first_toxic_word():
    texts = [" well you idiot, go home now", " a fine day\n and then stupid", " nothing bad here"]
    cuts = dead_end_cuts(texts, SCORER, 0.5)
    assert [t[:c] for t, c in zip(texts, cuts, strict=True)] == [" well you idiot,", " a fine day\n and then stupid",
                                                   " nothing bad here"]  # no toxic prefix: the whole text
    assert dead_end_cuts(texts, SCORER, 0.7)[0] == len(texts[0])  # one hit (0.5) is below 0.7


def test_empty_inputs():
    assert dead_end_cuts([], SCORER, 0.5) == []
    assert dead_end_cuts(["   "], SCORER, 0.5) == [3]
    assert word_prefix_ends("  ab  c ") == [4, 7]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "idiot", "x,", "\n", " "]), max_size=12))
def test_cut_prefix_is_the_shortest_toxic_word_prefix(tokens):
    text = " ".join(tokens)
    cut = dead_end_cuts([text], SCORER, 0.5)[0]
    ends = word_prefix_ends(text)
    toxic = [e for e in ends if SCORER([text[:e]])[0] >= 0.5]
    assert cut == (toxic[0] if toxic else len(text))


def test_assemble_truncates_only_toxic_continuations():
    records = [{"prompt": {"text": "hey"}, "source": "p1", "generations": [
        {"text": " you idiot and more words", "toxicity": 0.9},
        {"text": " a nice idiot-free day", "toxicity": 0.2},  # clean by its label: never cut
    ]}]
    cfg = AssembleConfig(mode="all", val_fraction=0.0, truncate="dead_end")
    with pytest.raises(ValueError, match="dead_end"):
        assemble(records, cfg, words)
    marked, n = mark_dead_ends(records, SCORER, cfg.threshold)
    assert n == 1 and "dead_end" not in records[0]["generations"][0]  # the input is not modified
    train, _, summary = assemble(marked, cfg, words)
    assert [r["text"] for r in train] == ["hey you idiot", "hey a nice idiot-free day"]
    assert [r["reward"] for r in train] == [[-1], [0]]
    assert summary["toxic_chars_kept"] == pytest.approx(len(" you idiot") / len(" you idiot and more words"))
    plain, _, _ = assemble(marked, AssembleConfig(mode="all", val_fraction=0.0), words)
    assert plain[0]["text"] == "hey you idiot and more words"


def test_unknown_truncate_mode_is_rejected():
    with pytest.raises(ValueError, match="truncate"):
        AssembleConfig(truncate="onset")
