"""The OpenAI-compatible server: the official client, rectification per request, 4xx on bad input, load."""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import openai
import pytest
import torch
from fastapi.responses import JSONResponse

from rectify.decoding import DecodingConfig, RectifiedSampler, caps_from_q
from rectify.lm import load_lm
from rectify.serving import Engine, create_app, running_server
from rectify.serving.app import ServeSettings
from tests.conftest import tiny_lm_config
from tests.test_decoding_sampler import one_thread  # noqa: F401 - the autouse one-thread fixture
from tests.toy_models import constant_q_model

MODEL = "tiny"


def tiny_generator():
    """A tiny random Llama (SmolLM2's tokenizer, which has a chat template) whose top token takes most mass."""
    gen, tok = load_lm(tiny_lm_config("llama"))
    with torch.no_grad():
        gen.get_output_embeddings().weight.mul_(16)
    return gen.eval(), tok


def tiny_app(gen, tok, value_model=None, **settings):
    """The server's app around ``gen``; plain by default, rectified by default when given a Q_D."""
    rectify = value_model is not None
    sampler = RectifiedSampler(gen, tok, value_model, DecodingConfig(rectify=rectify))
    return create_app(Engine(sampler), ServeSettings(**({"model_name": MODEL, "rectify": rectify} | settings)))


def inject_faults(app) -> collections.deque:
    """Answer POST /v1/completions with the statuses pushed on the returned deque ("pass": serve it)."""
    faults: collections.deque = collections.deque()

    @app.middleware("http")
    async def fault(request, call_next):
        if request.method == "POST" and request.url.path == "/v1/completions" and faults:
            status = faults.popleft()
            if status != "pass":
                return JSONResponse({"error": {"message": f"injected {status}"}}, status, {"Retry-After": "0"})
        return await call_next(request)

    return faults


@pytest.fixture(scope="module")
def models():
    gen, tok = tiny_generator()
    top = int(gen(torch.tensor([tok("Hello there")["input_ids"]])).logits[0, -1].argmax())
    q = torch.zeros(len(tok))
    q[top] = -0.7  # cap(top) = 1 - 0.7 - 0.1 = 0.2
    return gen, tok, constant_q_model("llama", q), top


@pytest.fixture(scope="module")
def server(models):
    gen, tok, vm, _ = models
    app = tiny_app(gen, tok, vm, max_logprobs=50, max_tokens=64, rectify=False)
    with running_server(app) as url:
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_official_client_completions_and_chat(client, models):
    _, tok, _, _ = models
    assert [m.id for m in client.models.list().data] == [MODEL]
    c = client.completions.create(model=MODEL, prompt=["Hello there", "Why"], max_tokens=4, n=2, seed=3,
                                  logprobs=3)
    assert len(c.choices) == 4 and sorted(x.index for x in c.choices) == [0, 1, 2, 3]
    first = c.choices[0]
    assert len(first.logprobs.tokens) == len(first.logprobs.top_logprobs) == 4 - (first.finish_reason == "stop")
    assert all(len(t) <= 3 for t in first.logprobs.top_logprobs) and c.usage.completion_tokens > 0
    again = client.completions.create(model=MODEL, prompt=["Hello there", "Why"], max_tokens=4, n=2, seed=3)
    assert [x.text for x in again.choices] == [x.text for x in c.choices]  # seeded: repeatable
    ids = tok("Hello there")["input_ids"]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=4, seed=3)
    assert by_ids.choices[0].text == c.choices[0].text  # a token-id prompt is the same prompt
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi!"}], max_tokens=5,
                                          logprobs=True, top_logprobs=2, seed=1)
    msg = chat.choices[0]
    assert msg.message.role == "assistant" and len(msg.logprobs.content) >= 1
    assert all(len(x.top_logprobs) <= 2 and x.bytes is not None for x in msg.logprobs.content)


def test_streaming_matches_the_whole_answer(client):
    """OpenAI's stream contract: one choice a chunk (``chunk.choices[0]`` is safe), the role once."""
    whole = client.completions.create(model=MODEL, prompt="Hello there", max_tokens=6, seed=7)
    chunks = list(client.completions.create(model=MODEL, prompt="Hello there", max_tokens=6, seed=7, stream=True))
    assert all(len(ch.choices) == 1 for ch in chunks)
    assert "".join(ch.choices[0].text for ch in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason and not any(ch.choices[0].finish_reason for ch in chunks[:-1])
    chat = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=4, seed=2, stream=True))
    whole_chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=4, seed=2)
    assert "".join(ch.choices[0].delta.content or "" for ch in chat) == whole_chat.choices[0].message.content
    assert [ch.choices[0].delta.role for ch in chat] == ["assistant"] + [None] * (len(chat) - 1)


def test_streaming_usage_only_when_asked(client):
    """``stream_options.include_usage``: ``usage: null`` on every chunk, then one with the usage and no choices."""
    kw = {"model": MODEL, "prompt": ["Hello there", "Hi"], "max_tokens": 3, "n": 2, "seed": 1, "stream": True}
    whole = client.completions.create(**kw | {"stream": False})
    chunks = list(client.completions.create(**kw, stream_options={"include_usage": True}))
    *body, last = chunks
    assert all(len(ch.choices) == 1 and ch.usage is None for ch in body)
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens > 0
    assert last.model_extra["rectify"] == whole.model_extra["rectify"]
    for index in range(4):
        text = "".join(ch.choices[0].text for ch in body if ch.choices[0].index == index)
        assert text == whole.choices[index].text


def test_rectify_per_request_caps_the_returned_logprobs(client, models):
    """logprobs are those of the distribution sampled from: under rectification the top token <= its cap."""
    _, _, _, top = models
    kw = {"model": MODEL, "prompt": "Hello there", "max_tokens": 1, "logprobs": 5,
          "extra_body": {"return_tokens_as_token_ids": True}}
    plain = client.completions.create(**kw).choices[0].logprobs.top_logprobs[0]
    assert plain[f"token_id:{top}"] > torch.log(torch.tensor(0.5))  # without caps it dominates
    rect = client.completions.create(**kw | {"extra_body": kw["extra_body"] | {"rectify": True}})
    lp = rect.choices[0].logprobs.top_logprobs[0][f"token_id:{top}"]
    assert abs(lp - float(torch.log(caps_from_q(torch.tensor(-0.7), 0.1)))) < 1e-5
    assert rect.model_extra["rectify"] == {"enabled": True, "epsilon": 0.1, "dead_ends": 0, "outside_support": 0,
                                           "row_steps": 1}
    strict = client.completions.create(**kw | {"extra_body": {"rectify": True, "epsilon": 1.0}})
    assert strict.model_extra["rectify"]["dead_ends"] == 1  # caps = p_min (1e-5) x 49152 tokens < 1: no distribution fits
    assert strict.choices[0].model_extra["dead_ends"] == 1


@pytest.mark.parametrize("body, status, words", [
    ({"model": "gpt-4", "prompt": "x"}, 404, "does not exist"),
    ({"model": MODEL, "prompt": "x", "temperature": 5}, 400, "temperature"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": MODEL, "prompt": "x", "max_tokens": 65}, 400, "maximum 64"),
    ({"model": MODEL, "prompt": "x", "logprobs": 51}, 400, "maximum 50"),
    ({"model": MODEL, "prompt": [10**9]}, 400, "outside the vocabulary"),
    ({"model": MODEL, "prompt": "word " * 300, "max_tokens": 8}, 400, "context"),
    ({"model": MODEL, "prompt": []}, 400, "empty"),
    ({"model": MODEL, "prompt": "x", "epsilon": 2}, 400, "epsilon"),
    ({"model": MODEL}, 400, "prompt"),
    ({"model": MODEL, "messages": []}, 400, "messages"),
    ({"model": MODEL, "prompt": "x", "stop": ["\n"]}, 400, "stop is not supported"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"model": MODEL, "prompt": "x", "logit_bias": {"5": -100}}, 400, "logit_bias"),
    ({"model": MODEL, "prompt": "x", "best_of": 3}, 400, "best_of"),
    ({"model": MODEL, "prompt": "x", "epsilon": 0.3}, 400, "epsilon applies only to rectified decoding"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400,
     "top_logprobs requires logprobs=true"),
])
def test_bad_requests_get_a_4xx_with_a_message(server, body, status, words):
    url = server[0] + ("/v1/chat/completions" if "messages" in body else "/v1/completions")
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "rectify": "yes"}, "rectify"),  # strict: not coerced to true
    ({"prompt": "x", "n": "2"}, "n"),
    ({"prompt": "x", "epsilon": 0.3}, "epsilon"),  # this server's default: rectify off
    ({"prompt": "x", "rectify": False, "epsilon": 0.3}, "epsilon"),
    ({"prompt": "x", "logprobs": 51}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 51}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": False, "top_logprobs": 0}, "top_logprobs"),
])
def test_a_400_names_the_field_the_client_sent(server, body, param):
    url = server[0] + ("/v1/chat/completions" if "messages" in body else "/v1/completions")
    r = httpx.post(url, json={"model": MODEL, "max_tokens": 2} | body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_null_max_tokens_and_top_logprobs_take_their_defaults(server):
    url = server[0]
    body = {"model": MODEL, "prompt": "Hello there", "seed": 4}
    default = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
    null = httpx.post(url + "/v1/completions", json=body | {"max_tokens": None}, timeout=30)
    assert null.status_code == 200, null.text
    assert null.json()["choices"][0]["text"] == default["choices"][0]["text"]
    assert null.json()["usage"]["completion_tokens"] == default["usage"]["completion_tokens"] <= 16
    chat = httpx.post(url + "/v1/chat/completions", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "top_logprobs": None})
    assert chat.status_code == 200, chat.text


IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}


def test_chat_content_as_text_parts_is_the_joined_text(server, client):
    """OpenAI's array form of a message's ``content``: its text parts, in order, are the message (same prompt,
    same seeded answer as the plain string)."""
    kw = {"model": MODEL, "max_tokens": 4, "seed": 3}
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]
    plain = httpx.post(server[0] + "/v1/chat/completions", timeout=30,
                       json=kw | {"messages": [{"role": "user", "content": "Hello there"}]})
    split = httpx.post(server[0] + "/v1/chat/completions", timeout=30,
                       json=kw | {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                                               {"role": "user", "content": parts}]})
    assert plain.status_code == split.status_code == 200, split.text
    system = httpx.post(server[0] + "/v1/chat/completions", timeout=30,
                        json=kw | {"messages": [{"role": "system", "content": "Be kind."},
                                                {"role": "user", "content": "Hello there"}]}).json()
    assert split.json()["usage"] == system["usage"] and split.json()["usage"] != plain.json()["usage"]
    assert split.json()["choices"][0]["message"] == system["choices"][0]["message"]
    official = client.chat.completions.create(messages=[{"role": "user", "content": parts}], **kw)
    assert official.choices[0].message.content == plain.json()["choices"][0]["message"]["content"]
    assert official.usage.prompt_tokens == plain.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize("content, words", [
    ([{"type": "text", "text": "What is this?"}, IMAGE_PART], "part 1 has type 'image_url'; only text parts"),
    ([], "must not be empty"),
    (["Hi"], "part 0 is a str; only text parts"),
    ([{"type": "text"}], "without a string 'text'"),
])
def test_chat_content_parts_other_than_text_are_a_400(server, client, content, words):
    r = httpx.post(server[0] + "/v1/chat/completions", timeout=30,
                   json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["message"].startswith("messages.0.content: ") and words in error["message"]
    assert error["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="only text parts"):
        client.chat.completions.create(model=MODEL, max_tokens=2,
                                       messages=[{"role": "user", "content": [IMAGE_PART]}])


def test_usage_counts_each_prompt_once(client, models):
    """``prompt_tokens`` as OpenAI and vLLM count it: not multiplied by ``n``; ``completion_tokens`` sums the choices."""
    _, tok, _, _ = models
    prompts = ["Hello there", "Why"]
    kw = {"model": MODEL, "prompt": prompts, "max_tokens": 3, "n": 3, "seed": 2, "logprobs": 0}
    whole = client.completions.create(**kw)
    prompt_tokens = sum(len(tok(p)["input_ids"]) for p in prompts)
    assert whole.usage.prompt_tokens == prompt_tokens
    assert whole.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in whole.choices)
    assert whole.usage.total_tokens == prompt_tokens + whole.usage.completion_tokens
    last = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))[-1]
    assert last.usage.model_dump() == whole.usage.model_dump()


def test_streamed_text_offsets_continue_across_chunks(client):
    kw = {"model": MODEL, "prompt": "Hello there", "max_tokens": 6, "seed": 5, "logprobs": 2}
    whole = client.completions.create(**kw).choices[0].logprobs
    chunks = [ch.choices[0].logprobs for ch in client.completions.create(**kw, stream=True)]
    assert [o for ch in chunks for o in ch.text_offset] == whole.text_offset
    assert [t for ch in chunks for t in ch.tokens] == whole.tokens
    assert whole.text_offset[1] > 0


@pytest.mark.parametrize("k", [0, 1])
def test_completion_top_logprobs_include_the_sampled_token(client, k):
    """OpenAI lists the sampled token's logprob among ``top_logprobs`` even outside the top K (K + 1 entries)."""
    lp = client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, seed=0, temperature=2, logprobs=k,
                                   extra_body={"return_tokens_as_token_ids": True}).choices[0].logprobs
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert top[token] == value and len(top) <= k + 1
    assert any(len(top) == k + 1 for top in lp.top_logprobs)  # at temperature 2 some draws fall outside the top K


def test_retrieve_a_model(client, server):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    missing = httpx.get(server[0] + "/v1/models/some/org-model", timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_malformed_json_and_unknown_routes(server):
    url = server[0]
    r = httpx.post(url + "/v1/completions", content=b'{"model": "tiny", "prompt": ', timeout=30,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert httpx.get(url + "/v1/nothing", timeout=30).status_code == 404
    assert httpx.get(url + "/health", timeout=30).json()["status"] == "ok"  # still serving


def test_unimplemented_fields_pass_at_their_defaults(server):
    """Clients that always send ``stop: null`` or zero penalties are served (only a value that would change the
    text is refused)."""
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2, "stop": None, "frequency_penalty": 0,
            "presence_penalty": 0.0, "logit_bias": {}, "best_of": 1, "user": "someone"}
    r = httpx.post(server[0] + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 1


def test_official_client_sees_typed_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.completions.create(model=MODEL, prompt="x", top_p=0)


def test_plain_server_refuses_rectify(models):
    gen, tok, _, _ = models
    with running_server(tiny_app(gen, tok)) as url:
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "rectify": True}, timeout=30)
        assert r.status_code == 400 and "without a Q_D" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "epsilon": 0.2}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "epsilon"  # not silently dropped
        chat = httpx.post(url + "/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert chat.status_code == 200


def test_200_concurrent_requests_are_all_answered_in_batches(server):
    url, app = server
    batches_before = app.state.service.batcher.batches

    async def hammer() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            return await asyncio.gather(*(http.post("/v1/completions", json={
                "model": MODEL, "prompt": f"Request number {i}", "max_tokens": 2, "seed": i}) for i in range(200)))

    t0 = time.monotonic()
    answers = asyncio.run(asyncio.wait_for(hammer(), timeout=90))
    assert time.monotonic() - t0 < 90
    assert [r.status_code for r in answers] == [200] * 200
    assert all(len(r.json()["choices"]) == 1 for r in answers)
    assert app.state.service.batcher.batches - batches_before < 100  # requests shared batches
