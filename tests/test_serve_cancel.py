"""A request whose client went away stops running: its rows end at the next step, not at ``max_tokens``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.serving import Engine, RowSpec, running_server
from tests.test_decoding_sampler import one_thread  # noqa: F401 - the autouse one-thread fixture
from tests.test_serve import MODEL, tiny_app, tiny_generator

LONG = 64  # the rows' max_tokens: far more steps than a cancelled batch may run


@pytest.fixture(scope="module")
def lm():
    return tiny_generator()


def test_engine_stops_cancelled_rows_and_leaves_the_others_unchanged(lm):
    gen, tok = lm
    engine = Engine(RectifiedSampler(gen, tok, None, DecodingConfig(rectify=False)))
    ids = tok("Hello there")["input_ids"]
    rows = [RowSpec(ids, max_tokens=12, seed=s) for s in (1, 2)]
    whole = engine.run(rows)
    assert [len(o.tokens) for o in whole] == [12, 12]
    asked = []

    def first_gone_after_3() -> list[bool]:
        asked.append(1)
        return [len(asked) > 3, False]

    outs = engine.run(rows, first_gone_after_3)
    assert outs[0].tokens == whole[0].tokens[:3] and outs[0].finish_reason is None
    assert outs[1].tokens == whole[1].tokens and outs[1].finish_reason == "length"  # the live row: unchanged
    asked.clear()
    gone = engine.run(rows, lambda: asked.append(1) or [True, True])
    assert [o.tokens for o in gone] == [[], []] and len(asked) == 1  # nothing left to run: no step at all


def hold_until_cancelled(engine: Engine, at_step: int) -> dict[str, Any]:
    """Make ``engine.run`` wait before step ``at_step`` until its rows are cancelled (once, at most 30 s).

    Returns what it records: ``reached`` (the wait began), ``done`` (the run returned) and ``steps`` (the most
    tokens any row got). The wait makes the test independent of speed: the client leaves while the batch runs.
    """
    record: dict[str, Any] = {"reached": threading.Event(), "done": threading.Event(), "steps": None}
    run = engine.run

    def held(rows: list[RowSpec], cancelled: Callable[[], Sequence[bool]] | None = None):
        asked = [0]

        def ask() -> Sequence[bool]:
            asked[0] += 1
            if asked[0] == at_step + 1:
                record["reached"].set()
                for _ in range(3000):
                    if all(cancelled()):
                        break
                    time.sleep(0.01)
            return cancelled()

        try:
            outs = run(rows, ask)
            record["steps"] = max(len(o.tokens) for o in outs)
            return outs
        finally:
            record["done"].set()

    engine.run = held
    return record


def send_and_leave(url: str, body: dict[str, Any], reached: threading.Event) -> None:
    """POST ``body`` on a raw connection and close it once the batch is running, without reading an answer."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + data)
        assert reached.wait(60), "the batch never started"


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_client_left_stops_its_batch(lm, stream):
    gen, tok = lm
    app = tiny_app(gen, tok, max_tokens=LONG)
    record = hold_until_cancelled(app.state.service.engine, at_step=2)
    with running_server(app) as url:
        body = {"model": MODEL, "prompt": "Hello there", "max_tokens": LONG, "n": 4, "temperature": 0,
                "stream": stream}
        send_and_leave(url, body, record["reached"])
        assert record["done"].wait(60)
        assert record["steps"] == 2  # stopped where the client left, not run out to max_tokens
        after = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
                           timeout=60)
        assert after.status_code == 200 and len(after.json()["choices"]) == 1
