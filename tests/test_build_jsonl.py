"""JSON-lines helpers: whole-line appends, interrupted tails repaired, corruption reported as file:line."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rectify.data.jsonl import (
    JSONLAppender,
    JSONLError,
    append_jsonl,
    count_complete,
    numbered_lines,
    parse_object,
    read_jsonl,
    repair_tail,
    resume_records,
    write_jsonl_atomic,
)

records = st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=20)), max_size=3),
                   max_size=8)


@settings(max_examples=40, deadline=None)
@given(recs=records, cut=st.integers(min_value=1, max_value=10_000))
def test_truncated_file_resumes_with_the_complete_prefix(tmp_path_factory, recs, cut):
    path = tmp_path_factory.mktemp("j") / "a.jsonl"
    append_jsonl(path, recs)
    data = path.read_bytes()
    cut = min(cut, len(data))
    path.write_bytes(data[:len(data) - cut] if data else b"")  # kill somewhere inside the file
    kept = resume_records(path)
    # exactly the records whose full line survived, in order, and the file now ends on a newline
    assert kept == recs[:len(kept)]
    full_lines = data[:len(data) - cut].count(b"\n")
    assert len(kept) == full_lines
    assert path.read_bytes() == b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in kept)
    append_jsonl(path, recs[len(kept):])
    assert read_jsonl(path) == recs


def test_repair_tail_cuts_only_the_partial_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3')
    assert repair_tail(path) == len(b'{"a": 3')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert repair_tail(path) == 0
    assert count_complete(path) == 2
    assert count_complete(tmp_path / "missing.jsonl") == 0


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": oops}\n{"a": 3}\n')
    with pytest.raises(JSONLError, match=r"bad\.jsonl:3: malformed JSON"):
        read_jsonl(path)
    with pytest.raises(JSONLError, match=r"^f:1: malformed JSON \(Unterminated string starting at column 7\)$"):
        parse_object('{"a": "unterminated', "f:1", JSONLError)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(JSONLError, match=r"bad\.jsonl:2: expected a JSON object"):
        read_jsonl(path)


@pytest.mark.parametrize("line, column", [('{"a": 1 "b": 2}', 9), ('{"text": "a", "reward": [0]', 28)])
def test_malformed_json_names_the_column_of_the_error(tmp_path, line, column):
    """Not column 1 when the error is at the line's end (a missing "}"): json counted from the newline."""
    path = tmp_path / "bad.jsonl"
    path.write_text(f'{{"a": 0}}\n{line}\n')
    with pytest.raises(JSONLError, match=rf"^{path}:2: malformed JSON \(Expecting ',' delimiter at column {column}\)$"):
        read_jsonl(path)  # bytes
    with pytest.raises(JSONLError, match=rf":2: malformed JSON \(Expecting ',' delimiter at column {column}\)$"):
        [parse_object(ln.text, ln.where) for ln in numbered_lines(path)]  # text, as user files are read


def test_a_line_that_is_not_utf8_names_file_line_and_column(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(JSONLError, match=r"latin1\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 11\); save"):
        read_jsonl(path)


def test_numbered_lines_decode_line_by_line_as_text_mode_reads(tmp_path):
    path = tmp_path / "mixed.txt"
    body = "\ufeffone\r\ntwo\rthree\n\n  \nné\r\n\r\nlast".encode()
    path.write_bytes(body)
    with open(path, encoding="utf-8-sig") as fh:  # what numbered_lines read before decoding line by line
        text_mode = [(n, line) for n, line in enumerate(fh, start=1) if line.strip()]
    assert [(ln.number, ln.text) for ln in numbered_lines(path)] == text_mode == [
        (1, "one\n"), (2, "two\n"), (3, "three\n"), (6, "né\n"), (8, "last")]
    path.write_bytes(body.replace("né".encode(), b"n\xe9"))
    with pytest.raises(JSONLError, match=r"mixed\.txt:6: not valid UTF-8 \(byte 0xe9 at column 2\)"):
        list(numbered_lines(path))
    bad: list[ValueError] = []  # on_bad sees it, and the lines after it are still read
    assert [ln.number for ln in numbered_lines(path, on_bad=bad.append)] == [1, 2, 3, 8]
    assert [str(e).split(" (")[0] for e in bad] == [f"{path}:6: not valid UTF-8"]


def test_partial_tail_is_an_error_unless_allowed(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    with pytest.raises(JSONLError, match=r"p\.jsonl:2: last line is incomplete"):
        read_jsonl(path)
    assert read_jsonl(path, allow_partial_tail=True) == [{"a": 1}]


def test_appender_writes_whole_lines_and_atomic_writer_replaces(tmp_path):
    path = tmp_path / "x.jsonl"
    with JSONLAppender(path) as out:
        out.append({"t": "héllo\nworld"})
        assert path.read_text(encoding="utf-8").count("\n") == 1  # visible at once, newline escaped
    assert write_jsonl_atomic(path, [{"b": 1}, {"b": 2}]) == 2
    assert read_jsonl(path) == [{"b": 1}, {"b": 2}]
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]  # no temp files left behind
