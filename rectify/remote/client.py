"""An async client for one call of an OpenAI-compatible ``/v1/completions``: top-K logprobs of the next token.

Real-API behaviour lives here and nowhere else: API key from an environment variable, requests spread over
``max_concurrency`` connections under a ``max_qps`` limit, a timeout per request, retries with exponential
backoff (honouring ``Retry-After``) on 429, 5xx and transport errors, and a :class:`RemoteAPIError` with
the server's message on any other 4xx (retrying a bad request only wastes quota).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from rectify.config_utils import config_values
from rectify.errors import InputError

logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request drowns the progress bar
RETRY_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class RemoteAPIError(InputError, RuntimeError):
    """The API refused a request (4xx) or kept failing after every retry; the message says which and why."""


@dataclass
class RemoteConfig:
    """The remote generator (``configs/lm/openai_api.yaml``; ``source: openai``)."""

    source: str = "openai"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # None: the first model the server lists at /models
    tokenizer: str | None = None  # the API's tokenizer (bundled name or Hub dir); None: Q_D's own
    api_key_env: str = "OPENAI_API_KEY"
    top_logprobs: int = 20  # K: the support kept per step
    return_tokens_as_token_ids: bool = True  # vLLM / our server; false for APIs that refuse unknown fields
    prompts_per_request: int = 16
    max_concurrency: int = 8
    max_qps: float | None = None  # requests started per second (None: unlimited)
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 0.5  # first retry delay; doubles each retry, capped by backoff_max_s
    backoff_max_s: float = 30.0
    on_unmapped: str = "drop"  # drop (count and leave out) | error
    check_tokenizer: bool = True  # compare the API's token count of a probe text with the tokenizer's first
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request (e.g. {rectify: false})

    def __post_init__(self) -> None:
        if self.top_logprobs < 1:
            raise ValueError(f"top_logprobs (K) must be >= 1, got {self.top_logprobs}")
        if self.prompts_per_request < 1 or self.max_concurrency < 1 or self.max_retries < 0:
            raise ValueError("prompts_per_request and max_concurrency must be >= 1, max_retries >= 0")
        if self.max_qps is not None and not self.max_qps > 0:
            raise ValueError(f"max_qps must be > 0 or null, got {self.max_qps}")
        if self.on_unmapped not in ("drop", "error"):
            raise ValueError(f"on_unmapped must be 'drop' or 'error', got {self.on_unmapped!r}")

    @classmethod
    def from_any(cls, cfg: Any) -> RemoteConfig:
        return cls(**config_values(cls, cfg, "remote LM"))


class _RateLimit:
    """Space request starts at least ``1 / qps`` seconds apart (shared by all concurrent tasks)."""

    def __init__(self, qps: float | None):
        self.interval = 1.0 / qps if qps else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = time.monotonic()
            if self.next_at > now:
                await asyncio.sleep(self.next_at - now)
            self.next_at = max(now, self.next_at) + self.interval


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(body.get("detail", body))[:500] if isinstance(body, dict) else str(body)[:500]


class CompletionsClient:
    """``async with CompletionsClient(cfg) as c: await c.next_token_logprobs([[ids], ...])``."""

    def __init__(self, cfg: RemoteConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.cfg = cfg
        self.transport = transport
        self.stats = {"requests": 0, "retries": 0}
        self._http: httpx.AsyncClient | None = None
        self.model = cfg.model

    async def __aenter__(self) -> CompletionsClient:
        # asyncio primitives belong to one event loop: made anew for each `async with`.
        self._limit = _RateLimit(self.cfg.max_qps)
        self._slots = asyncio.Semaphore(self.cfg.max_concurrency)
        headers = {}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=self.cfg.max_concurrency)
        self._http = httpx.AsyncClient(base_url=self.cfg.base_url.rstrip("/") + "/", headers=headers,
                                       timeout=self.cfg.timeout_s, limits=limits, transport=self.transport)
        if self.model is None:
            listed = await self._request("GET", "models")
            models = listed.get("data") or []
            if not models:
                raise RemoteAPIError(f"{self.cfg.base_url}/models lists no model; set lm.model")
            self.model = str(models[0]["id"])
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self._http is not None, "use CompletionsClient inside `async with`"
        url = f"{self.cfg.base_url.rstrip('/')}/{path}"
        for attempt in range(self.cfg.max_retries + 1):
            async with self._slots:
                await self._limit.wait()
                self.stats["requests"] += 1
                try:
                    response = await self._http.request(method, path, json=payload)
                except httpx.TransportError as exc:  # timeouts, refused or dropped connections
                    response, failure = None, f"{type(exc).__name__}: {exc}"
            if response is not None:
                if response.status_code < 400:
                    return response.json()
                failure = f"HTTP {response.status_code}: {_message(response)}"
                if response.status_code not in RETRY_STATUSES:
                    raise RemoteAPIError(f"{method} {url} was refused ({failure}); not retried")
            if attempt == self.cfg.max_retries:
                raise RemoteAPIError(f"{method} {url} failed {attempt + 1} times; last: {failure}")
            self.stats["retries"] += 1
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        try:
            if after is not None:
                return min(float(after), self.cfg.backoff_max_s)
        except ValueError:
            pass  # an HTTP date: fall back to exponential backoff
        base = min(self.cfg.backoff_s * 2**attempt, self.cfg.backoff_max_s)
        return base * random.uniform(0.5, 1.0)  # jitter: clients that failed together retry apart

    async def _one(self, prompts: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        payload: dict[str, Any] = {"model": self.model, "prompt": [list(map(int, p)) for p in prompts],
                                   "max_tokens": 1, "logprobs": self.cfg.top_logprobs, "temperature": 1.0,
                                   "top_p": 1.0, "n": 1}
        if self.cfg.return_tokens_as_token_ids:
            payload["return_tokens_as_token_ids"] = True
        payload |= dict(self.cfg.extra_body)
        body = await self._request("POST", "completions", payload)
        if (body.get("rectify") or {}).get("enabled"):   # this project's server says so in every answer
            raise RemoteAPIError(f"{self.cfg.base_url} rectifies its answers itself, so rectifying them here would "
                                 "cap twice: point lm.base_url at a plain LM (e.g. serve.py decoding=plain) or ask "
                                 "this one for plain logprobs with +lm.extra_body.rectify=false")
        choices = sorted(body.get("choices") or [], key=lambda c: int(c.get("index", 0)))
        if len(choices) != len(prompts):
            raise RemoteAPIError(f"asked for {len(prompts)} completions, got {len(choices)}")
        out = []
        for c in choices:
            top = ((c.get("logprobs") or {}).get("top_logprobs") or [None])[0]
            if not isinstance(top, dict) or not top:
                raise RemoteAPIError("the server returned no top_logprobs for the first token; it must support "
                                     f"logprobs={self.cfg.top_logprobs} on /completions")
            # OpenAI-style servers add the sampled token when it is not among the top K (K + 1 entries): keep the
            # K most likely, the support the caps are computed on
            ranked = sorted(((str(k), float(v)) for k, v in top.items()), key=lambda kv: -kv[1])
            out.append(dict(ranked[: self.cfg.top_logprobs]))
        return out

    async def prompt_tokens(self, text: str) -> int | None:
        """How many tokens the API counts in ``text`` sent as a string (``usage.prompt_tokens`` of a one-token
        completion); None when the API reports no usage."""
        payload: dict[str, Any] = {"model": self.model, "prompt": text, "max_tokens": 1, "n": 1}
        body = await self._request("POST", "completions", payload | dict(self.cfg.extra_body))
        count = (body.get("usage") or {}).get("prompt_tokens")
        return int(count) if isinstance(count, int) and not isinstance(count, bool) else None

    async def next_token_logprobs(self, prompts: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        """Top-K ``{token string: logprob}`` of the next token after each prompt (token ids), in order."""
        size = self.cfg.prompts_per_request
        chunks = [prompts[i: i + size] for i in range(0, len(prompts), size)]
        answers = await asyncio.gather(*(self._one(c) for c in chunks))
        return [row for chunk in answers for row in chunk]
