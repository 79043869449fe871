"""The FastAPI app: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``, ``/health``.

Token strings in ``logprobs``: by default each token's decoded text (what OpenAI returns; ``tokens``
concatenate to ``text``, EOS aside). Decoded text cannot name every byte-level token (several decode to
U+FFFD, and ``top_logprobs`` is a dict keyed by that text), so ``return_tokens_as_token_ids: true`` (vLLM's
field) spells them ``"token_id:<id>"``: exact, and what :mod:`rectify.remote` asks for. Chat logprobs also
carry each token's exact ``bytes``. The logprobs are those of the distribution the token was drawn from,
after rectification when it is on; an EOS step is listed in ``logprobs`` although ``text`` leaves it out.
As OpenAI does, a completion's ``top_logprobs`` also lists the sampled token (up to ``logprobs + 1`` entries).

A request whose client disconnects (or times out) is cancelled: its rows stop at the next decoding step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rectify.decoding.rows import encode_prompt, row_seed
from rectify.remote.tokens import token_bytes
from rectify.serving.batching import Batcher
from rectify.serving.engine import Engine, RowOutput, RowSpec
from rectify.serving.schema import ChatRequest, CompletionRequest, SamplingFields


@dataclass
class ServeSettings:
    """``configs/serve.yaml``'s ``serve`` section (less host / port)."""

    model_name: str = "rectify"
    max_logprobs: int | None = 100  # None: the whole vocabulary
    max_tokens: int = 512
    max_n: int = 64
    max_rows_per_request: int = 256
    max_batch_rows: int = 64
    batch_wait_ms: float = 5.0
    rectify: bool = True  # default for requests that do not say (needs a Q_D)
    epsilon: float = 0.1


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class Service:
    """Request -> rows -> batcher -> OpenAI-shaped response (shared by both endpoints)."""

    def __init__(self, engine: Engine, settings: ServeSettings):
        self.engine = engine
        self.settings = settings
        self.batcher = Batcher(engine, settings.max_batch_rows, settings.batch_wait_ms / 1000)
        tok = engine.tokenizer
        self.texts = tok.batch_decode([[i] for i in range(engine.vocab_size)])
        self.bytes = token_bytes(tok)
        self.eos = set(engine.sampler.eos_ids.tolist())

    # ------------------------------------------------------------------ requests -> rows

    def check_model(self, req: SamplingFields) -> None:
        if req.model != self.settings.model_name:
            raise APIError(404, f"model {req.model!r} does not exist; this server serves "
                                f"{self.settings.model_name!r}", "model", "model_not_found")

    def prompt_ids(self, prompt: Any) -> list[list[int]]:
        if isinstance(prompt, str):
            prompt = [prompt]
        elif prompt and isinstance(prompt[0], int):
            prompt = [prompt]
        out = []
        for p in prompt:
            ids = encode_prompt(self.engine.tokenizer, p) if isinstance(p, str) else list(p)
            bad = [i for i in ids if not 0 <= i < self.engine.vocab_size]
            if bad:
                raise APIError(400, f"token ids {bad[:5]} are outside the vocabulary (0..{self.engine.vocab_size - 1})",
                               "prompt")
            out.append(ids)
        return out

    def check_logprobs(self, k: int | None, param: str) -> None:
        """Refuse a K over ``max_logprobs``, naming the field the client sent it in."""
        cap = self.settings.max_logprobs if self.settings.max_logprobs is not None else self.engine.vocab_size
        if k is not None and k > cap:
            raise APIError(400, f"{param}={k} exceeds this server's maximum {cap}", param)

    def check_rectify(self, req: SamplingFields) -> bool:
        """The request's rectification; an ``epsilon`` it would not use is a 400, not silently dropped."""
        rectify = self.settings.rectify if req.rectify is None else req.rectify
        if rectify and not self.engine.can_rectify:
            raise APIError(400, "rectify=true but this server runs without a Q_D (start it with "
                                "value_model_path=... and decoding.rectify=true)", "rectify")
        if req.epsilon is not None and not rectify:
            why = "rectify is false" if self.engine.can_rectify else "this server runs without a Q_D"
            raise APIError(400, f"epsilon applies only to rectified decoding, and {why}", "epsilon")
        return rectify

    def rows(self, req: SamplingFields, prompts: list[list[int]], max_tokens: int | None,
             logprobs: int | None) -> list[RowSpec]:
        s = self.settings
        rectify = self.check_rectify(req)
        if req.n > s.max_n or req.n * len(prompts) > s.max_rows_per_request:
            raise APIError(400, f"n * prompts = {req.n * len(prompts)} sequences; at most {s.max_rows_per_request} "
                                f"per request and n <= {s.max_n}", "n")
        rows = []
        for i, ids in enumerate(prompts):
            room = self.engine.max_positions - len(ids)
            want = max_tokens if max_tokens is not None else min(s.max_tokens, room)
            if want > s.max_tokens:
                raise APIError(400, f"max_tokens={want} exceeds this server's maximum {s.max_tokens}", "max_tokens")
            if want < 1 or len(ids) + want > self.engine.max_positions:
                raise APIError(400, f"prompt ({len(ids)} tokens) + max_tokens ({want}) exceeds the model's context "
                                    f"of {self.engine.max_positions} tokens", "prompt", "context_length_exceeded")
            for j in range(req.n):
                seed = row_seed(req.seed + i, j) if req.seed is not None else None
                rows.append(RowSpec(ids, want, req.temperature, req.top_p, req.top_k, rectify,
                                    s.epsilon if req.epsilon is None else req.epsilon, seed, logprobs))
        try:
            self.engine.config_for(rows[0])  # epsilon etc. against the cap rule
        except ValueError as exc:
            raise APIError(400, str(exc), "epsilon") from exc
        return rows

    # ------------------------------------------------------------------ rows -> responses

    def token_name(self, i: int, as_ids: bool) -> str:
        return f"token_id:{i}" if as_ids else self.texts[i]

    def text(self, out: RowOutput) -> str:
        tokens = out.tokens[:-1] if out.finish_reason == "stop" else out.tokens
        return self.engine.tokenizer.decode(tokens, skip_special_tokens=True)

    async def generate(self, rows: list[RowSpec], request: Request) -> list[RowOutput] | None:
        """The rows' outputs, or None once the client has gone (its rows are then cancelled, not run out)."""
        task = asyncio.ensure_future(self.batcher.submit(rows))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not task.done():
                task.cancel()  # cancels the batcher's future: the worker stops these rows
        return task.result() if task in done else None

    def completion_logprobs(self, out: RowOutput, start: int, as_ids: bool) -> dict[str, Any]:
        """OpenAI's legacy logprobs of the tokens from ``start`` (a stream's chunk), offsets counted from 0."""
        names = [self.token_name(t, as_ids) for t in out.tokens]
        offsets, at = [], 0
        for n in names:
            offsets.append(at)
            at += len(n)
        tops = []
        for top, token, lp in zip(out.top_logprobs[start:], out.tokens[start:], out.token_logprobs[start:],
                                  strict=True):
            entry: dict[str, float] = {}
            for i, v in [*top, (token, lp)]:  # the sampled token too, as OpenAI does (up to K + 1 entries)
                entry.setdefault(self.token_name(i, as_ids), v)  # decoded text may repeat: keep the likelier
            tops.append(entry)
        return {"tokens": names[start:], "token_logprobs": out.token_logprobs[start:], "top_logprobs": tops,
                "text_offset": offsets[start:]}

    def chat_logprobs(self, out: RowOutput, start: int, as_ids: bool) -> dict[str, Any]:
        def item(i: int, lp: float) -> dict[str, Any]:
            return {"token": self.token_name(i, as_ids), "logprob": lp, "bytes": list(self.bytes[i])}

        return {"content": [item(t, lp) | {"top_logprobs": [item(i, v) for i, v in top]}
                            for t, lp, top in zip(out.tokens[start:], out.token_logprobs[start:],
                                                  out.top_logprobs[start:], strict=True)]}

    def summary(self, rows: list[RowSpec], outs: list[RowOutput], n: int) -> dict[str, Any]:
        """The OpenAI ``usage`` block and the ``rectify`` counts of one request's rows (``n`` per prompt).

        Each prompt counts once however many samples it has (OpenAI's and vLLM's ``prompt_tokens``).
        """
        n_prompt = sum(len(r.prompt_ids) for r in rows[::n])
        done = sum(len(o.tokens) for o in outs)
        return {"usage": {"prompt_tokens": n_prompt, "completion_tokens": done, "total_tokens": n_prompt + done},
                "rectify": {"enabled": rows[0].rectify, "epsilon": rows[0].epsilon if rows[0].rectify else None,
                            "dead_ends": sum(o.dead_ends for o in outs),
                            "outside_support": sum(o.outside_support for o in outs), "row_steps": done}}


async def _disconnected(request: Request) -> None:
    """Return once the client has gone: with the body read, the server's next message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _head(kind: str, model: str) -> dict[str, Any]:
    return {"id": f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex[:24]}",
            "object": kind, "created": int(time.time()), "model": model}


async def _stream(service: Service, rows: list[RowSpec], chunk: Callable[[int, RowOutput, int, str], dict],
                  head: dict[str, Any], include_usage: bool, n: int) -> AsyncIterator[str]:
    """SSE events, one per row and step, as the worker produces them; then ``[DONE]``.

    As OpenAI does, the usage (here with the ``rectify`` summary) comes only when the request asks for it
    (``stream_options.include_usage``), in a last chunk with no choices, and every chunk before it carries
    ``usage: null``; without it each chunk has one choice, so ``chunk.choices[0]`` is safe. When the client
    goes away the server closes this generator, and ``finally`` cancels the rows still running.
    """
    if include_usage:
        head = head | {"usage": None}
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, RowOutput, int]] = asyncio.Queue()
    sent = [""] * len(rows)
    for index, row in enumerate(rows):
        def push(t: int, out: RowOutput, index: int = index) -> None:
            snapshot = RowOutput(list(out.tokens), list(out.token_logprobs), list(out.top_logprobs),
                                 out.finish_reason, out.dead_ends, out.outside_support)
            loop.call_soon_threadsafe(events.put_nowait, (index, snapshot, t))
        row.on_token = push
    task = asyncio.ensure_future(service.batcher.submit(rows))

    def render(index: int, out: RowOutput, t: int) -> str:
        text = service.text(out)
        if out.finish_reason is None:
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 character: wait for its next byte
        delta, sent[index] = text[len(sent[index]):], text
        return "data: " + json.dumps(head | chunk(index, out, t, delta)) + "\n\n"

    getter: asyncio.Future | None = None
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield render(*getter.result())
                continue
            getter.cancel()
            while not events.empty():
                yield render(*events.get_nowait())
            try:
                outs = task.result()
                if include_usage:
                    yield "data: " + json.dumps(head | {"choices": []} | service.summary(rows, outs, n)) + "\n\n"
            except Exception as exc:  # noqa: BLE001 - the status line is already sent: report in-band
                yield "data: " + json.dumps({"error": {"message": str(exc), "type": "server_error"}}) + "\n\n"
            break
        yield "data: [DONE]\n\n"
    finally:  # also when the client went away mid-stream: stop its rows
        task.cancel()
        if getter is not None:
            getter.cancel()


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app; its batching worker starts and stops with the app's lifespan."""
    settings = settings or ServeSettings()
    service = Service(engine, settings)

    async def lifespan(app: FastAPI):
        service.batcher.start()
        yield
        service.batcher.stop()

    app = FastAPI(title="rectify", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, f"the request body is not valid JSON ({errors[0].get('ctx', {}).get('error', '')})")
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in errors]
        first = errors[0].get("loc", ()) if errors else ()
        return _error(400, "; ".join(parts), str(first[1]) if len(first) > 1 else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crash(_: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_name, "rectify_available": engine.can_rectify,
                "batches": service.batcher.batches}

    card = {"id": settings.model_name, "object": "model", "created": 0, "owned_by": "rectify"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model_id:path}")  # :path: served names such as "HuggingFaceTB/SmolLM2-135M" have a "/"
    async def model(model_id: str) -> dict[str, Any]:
        if model_id != settings.model_name:
            raise APIError(404, f"model {model_id!r} does not exist; this server serves {settings.model_name!r}",
                           "model", "model_not_found")
        return card

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        service.check_model(req)
        service.check_logprobs(req.logprobs, "logprobs")
        prompts = service.prompt_ids(req.prompt)
        rows = service.rows(req, prompts, req.max_tokens, req.logprobs)
        head = _head("text_completion", settings.model_name)
        as_ids = req.return_tokens_as_token_ids

        def choice(index: int, out: RowOutput, start: int, text: str) -> dict[str, Any]:
            lp = service.completion_logprobs(out, start, as_ids) if req.logprobs is not None else None
            return {"index": index, "text": text, "logprobs": lp, "finish_reason": out.finish_reason,
                    "dead_ends": out.dead_ends}

        if req.stream:
            return StreamingResponse(_stream(service, rows, lambda i, o, t, d: {"choices": [choice(i, o, t, d)]},
                                             head, req.include_usage, req.n), media_type="text/event-stream")
        outs = await service.generate(rows, request)
        if outs is None:
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        # JSONResponse directly: FastAPI's jsonable_encoder is slow on vocabulary-sized logprob dicts.
        return JSONResponse(head | {"choices": [choice(i, o, 0, service.text(o)) for i, o in enumerate(outs)]}
                            | service.summary(rows, outs, req.n))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        service.check_model(req)
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError(400, "top_logprobs requires logprobs=true", "top_logprobs")
        service.check_logprobs(req.top_logprobs, "top_logprobs")
        tok = engine.tokenizer
        if not getattr(tok, "chat_template", None):
            raise APIError(400, f"model {settings.model_name!r} has no chat template; use /v1/completions", "messages")
        text = tok.apply_chat_template([m.model_dump() for m in req.messages], add_generation_prompt=True,
                                       tokenize=False)
        prompts = [list(tok(text, add_special_tokens=False)["input_ids"])]
        top = (req.top_logprobs or 0) if req.logprobs else None
        rows = service.rows(req, prompts, req.max_completion_tokens or req.max_tokens, top)
        head = _head("chat.completion", settings.model_name)
        as_ids = req.return_tokens_as_token_ids

        def choice(index: int, out: RowOutput, start: int, text: str, delta: bool = False) -> dict[str, Any]:
            lp = service.chat_logprobs(out, start, as_ids) if req.logprobs else None
            # a stream names the role once, in each choice's first delta, as OpenAI does
            message = {"role": "assistant", "content": text} if not delta or start == 0 else {"content": text}
            return {"index": index, ("delta" if delta else "message"): message, "logprobs": lp,
                    "finish_reason": out.finish_reason, "dead_ends": out.dead_ends}

        if req.stream:
            chunk_head = head | {"object": "chat.completion.chunk"}
            return StreamingResponse(_stream(service, rows, lambda i, o, t, d: {"choices": [choice(i, o, t, d, True)]},
                                             chunk_head, req.include_usage, req.n), media_type="text/event-stream")
        outs = await service.generate(rows, request)
        if outs is None:
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        # JSONResponse directly: FastAPI's jsonable_encoder is slow on vocabulary-sized logprob dicts.
        return JSONResponse(head | {"choices": [choice(i, o, 0, service.text(o)) for i, o in enumerate(outs)]}
                            | service.summary(rows, outs, req.n))

    return app
