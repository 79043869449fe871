"""A request whose client went away stops running: its rows end at the next step, not at ``max_tokens``.

Rows that finished or were cancelled leave the engine's batch: later forward passes run only the live rows.
"""

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

import rectify.serving.engine as engine_module
from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.serving import Engine, RowOutput, RowSpec, running_server
from rectify.value_model import ValueModel
from tests.test_decoding_sampler import one_thread  # noqa: F401 - the autouse one-thread fixture
from tests.test_serve import MODEL, tiny_app, tiny_generator
from tests.toy_models import random_q_model

LONG = 64  # the rows' max_tokens: far more steps than a cancelled batch may run


@pytest.fixture(scope="module")
def lm():
    return tiny_generator()


@pytest.fixture(scope="module")
def engines(lm) -> dict[str, Engine]:
    """Engines without Q_D, with Q_D on its own backbone (its own KV cache) and with Q_D sharing the generator's."""
    gen, tok = lm
    shared_gen, _ = tiny_generator()
    shared_vm = ValueModel.from_backbone(shared_gen, {"bounded": True}, tok)
    shared_vm.head.load_state_dict(random_q_model("llama").head.state_dict())
    engines = {"plain": Engine(RectifiedSampler(gen, tok, None, DecodingConfig(rectify=False))),
               "separate": Engine(RectifiedSampler(gen, tok, random_q_model("llama"), DecodingConfig(rectify=False))),
               "shared": Engine(RectifiedSampler(shared_gen, tok, shared_vm.eval(), DecodingConfig(rectify=False)))}
    assert engines["shared"].sampler.shared and not engines["separate"].sampler.shared
    return engines


def mixed_rows(engine: Engine, steps: list[tuple[int, int]]) -> list[RowSpec]:
    """A 1-token row, a long sampled row (rectified when the engine can) and a long greedy one; prompts of
    different lengths, so the long rows are left-padded while the short one is in the batch.

    ``on_token`` calls of the long sampled row are appended to ``steps`` as ``(step, tokens so far)``."""
    tok = engine.tokenizer
    rect = engine.can_rectify
    return [RowSpec(tok("Hello there, how are you doing today")["input_ids"], max_tokens=1, seed=1, rectify=rect),
            RowSpec(tok("Hi")["input_ids"], max_tokens=10, seed=2, temperature=0.9, top_k=40, rectify=rect,
                    epsilon=0.3, logprobs=3, on_token=lambda t, out: steps.append((t, len(out.tokens)))),
            RowSpec(tok("Why")["input_ids"], max_tokens=7, temperature=0, rectify=rect, logprobs=0)]


def batch_sizes(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Record the batch size of every call the engine makes to its forward function ``name``."""
    sizes: list[int] = []
    step = getattr(engine_module, name)

    def recorded(model: Any, ids: Any, *args: Any, **kwargs: Any) -> Any:
        sizes.append(ids.shape[0])
        return step(model, ids, *args, **kwargs)

    monkeypatch.setattr(engine_module, name, recorded)
    return sizes


def same_output(a: RowOutput, b: RowOutput) -> bool:
    """Equal tokens, counts and finish reasons; logprobs equal up to float rounding (batched matmuls)."""
    def numbers(out: RowOutput) -> list[float]:
        return out.token_logprobs + [lp for top in out.top_logprobs for _, lp in top]

    def exact(out: RowOutput) -> tuple:
        return out.tokens, [[i for i, _ in top] for top in out.top_logprobs], out.finish_reason, out.dead_ends, \
            out.outside_support

    return exact(a) == exact(b) and numbers(a) == pytest.approx(numbers(b), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("path", ["plain", "separate", "shared"])
def test_long_rows_batched_with_a_short_one_are_unchanged(engines, path):
    engine = engines[path]
    batched_steps: list[tuple[int, int]] = []
    alone_steps: list[tuple[int, int]] = []
    batched = engine.run(mixed_rows(engine, batched_steps))
    short, long, greedy = mixed_rows(engine, alone_steps)
    assert len(batched[0].tokens) == 1 and len(batched[1].tokens) > 1
    assert same_output(batched[1], engine.run([long])[0]) and batched_steps == alone_steps
    assert same_output(batched[2], engine.run([greedy])[0])
    assert same_output(batched[0], engine.run([short])[0])


@pytest.mark.parametrize("path", ["plain", "separate", "shared"])
def test_finished_and_cancelled_rows_leave_the_forward_passes(engines, path, monkeypatch):
    """The 1-token row leaves after step 0, the greedy row is cancelled before step 3: the long row runs alone."""
    engine = engines[path]
    rows = mixed_rows(engine, [])
    alone = engine.run([rows[1]])[0]
    lm_sizes, q_sizes = batch_sizes(monkeypatch, "lm_step"), batch_sizes(monkeypatch, "q_step")
    asked = []

    def greedy_gone_after_3() -> list[bool]:
        asked.append(1)
        return [False, False, len(asked) > 3]

    outs = engine.run(rows, greedy_gone_after_3)
    assert same_output(outs[1], alone) and len(alone.tokens) == 10
    assert len(outs[2].tokens) == 3 and outs[2].finish_reason is None
    assert lm_sizes == [3, 2, 2] + [1] * 7  # the prefill, then one call per step: only the rows still running
    assert q_sizes == (lm_sizes if path == "separate" else [])  # shared: the Q head reads the generator's state


def test_q_d_stops_once_no_rectified_row_is_left(engines, monkeypatch):
    engine = engines["separate"]
    ids = engine.tokenizer("Hello there")["input_ids"]
    rows = [RowSpec(ids, max_tokens=2, seed=1, rectify=True), RowSpec(ids, max_tokens=6, seed=2)]
    alone = engine.run(rows[1:])[0]
    lm_sizes, q_sizes = batch_sizes(monkeypatch, "lm_step"), batch_sizes(monkeypatch, "q_step")
    outs = engine.run(rows)
    assert same_output(outs[1], alone) and len(outs[0].tokens) == 2
    assert lm_sizes == [2, 2, 1, 1, 1, 1] and q_sizes == [2, 2]


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
