"""The API client on a mock transport: key from the environment, QPS limit, timeouts retried, 4xx not."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from rectify.remote import CompletionsClient, RemoteAPIError, RemoteConfig


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/models"):
        return httpx.Response(200, json={"data": [{"id": "m"}]})
    n = len(json.loads(request.content)["prompt"])
    return httpx.Response(200, json={"choices": [{"index": i, "logprobs": {"top_logprobs": [{"token_id:7": -0.1}]}}
                                                 for i in reversed(range(n))]})


def run(cfg: RemoteConfig, handler, prompts) -> tuple[list, dict]:
    async def go():
        async with CompletionsClient(cfg, httpx.MockTransport(handler)) as c:
            return await c.next_token_logprobs(prompts), c.stats
    return asyncio.run(go())


def test_key_from_env_model_listed_chunks_in_order(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    seen = []

    def handler(request):
        seen.append(request)
        return answer(request)

    out, stats = run(RemoteConfig(api_key_env="MY_KEY", prompts_per_request=2), handler, [[1], [2], [3]])
    assert out == [{"token_id:7": -0.1}] * 3 and stats["requests"] == 3  # GET /models + 2 chunks
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in seen)
    body = json.loads(seen[1].content)
    assert body["model"] == "m" and body["max_tokens"] == 1 and body["logprobs"] == 20
    assert body["return_tokens_as_token_ids"] is True


def test_qps_limit_spaces_requests():
    cfg = RemoteConfig(model="m", prompts_per_request=1, max_qps=20)
    t0 = time.monotonic()
    run(cfg, answer, [[i] for i in range(6)])
    assert time.monotonic() - t0 >= 5 / 20 * 0.95


def test_timeouts_are_retried_and_4xx_is_not():
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return answer(request)

    cfg = RemoteConfig(model="m", backoff_s=0.001)
    out, stats = run(cfg, flaky, [[1]])
    assert stats["retries"] == 1 and out == [{"token_id:7": -0.1}]
    with pytest.raises(RemoteAPIError, match="HTTP 422: bad logprobs.*not retried"):
        run(cfg, lambda r: httpx.Response(422, json={"error": {"message": "bad logprobs"}}), [[1]])
    with pytest.raises(RemoteAPIError, match="no top_logprobs"):
        run(cfg, lambda r: httpx.Response(200, json={"choices": [{"index": 0, "logprobs": None}]}), [[1]])


def test_a_server_that_rectifies_already_is_refused_unless_asked_for_plain_logprobs():
    """Pointed at a rectifying server (this project's serve.py with a Q_D, the default port), the API path would
    cap an already capped distribution; the server says it rectified, so the client stops. Asking it for plain
    logprobs (its per-request `rectify: false`) is the way round."""
    def rectifying(request):
        body = json.loads(request.content)
        n = len(body["prompt"])
        return httpx.Response(200, json={
            "choices": [{"index": i, "logprobs": {"top_logprobs": [{"token_id:7": -0.1}]}} for i in range(n)],
            "rectify": {"enabled": body.get("rectify", True), "epsilon": 0.05}})

    with pytest.raises(RemoteAPIError, match="rectifies its answers itself"):
        run(RemoteConfig(model="m"), rectifying, [[1]])
    out, _ = run(RemoteConfig(model="m", extra_body={"rectify": False}), rectifying, [[1]])
    assert out == [{"token_id:7": -0.1}]


def test_the_sampled_token_an_openai_server_adds_beyond_the_top_k_is_left_out():
    """OpenAI and vLLM return up to logprobs + 1 entries (the sampled token too): the support stays the top K."""
    def k_plus_one(request):
        n = len(json.loads(request.content)["prompt"])
        top = {"token_id:9": -9.0, "token_id:7": -0.1, "token_id:8": -1.0}
        return httpx.Response(200, json={"choices": [{"index": i, "logprobs": {"top_logprobs": [top]}}
                                                     for i in range(n)]})

    out, _ = run(RemoteConfig(model="m", top_logprobs=2), k_plus_one, [[1]])
    assert out == [{"token_id:7": -0.1, "token_id:8": -1.0}]
