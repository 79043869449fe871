"""Request bodies of the OpenAI-compatible endpoints, validated by pydantic (bad values -> HTTP 400).

Only the fields this server honours are declared; other OpenAI fields (``user``, ...) are ignored, as
vLLM does, except those that would change the text and are not implemented (``stop``, the penalties,
``logit_bias``, ``best_of``, ``echo``): their defaults (null, 0, empty) pass, any other value is a 400 rather
than silently different text. Extensions: ``top_k``, ``rectify``, ``epsilon`` and ``return_tokens_as_token_ids``
(vLLM's name: tokens are spelt ``"token_id:<id>"`` so a client maps them back to ids exactly). ``n`` and
``rectify`` are strict (``"2"`` or ``"yes"`` is a 400): a mistyped switch must not be guessed at.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo, field_validator

DEFAULT_MAX_TOKENS = 16  # /v1/completions' default, OpenAI's


class StreamOptions(BaseModel):
    """OpenAI's ``stream_options``: ``include_usage`` adds a last chunk with no choices and the ``usage``."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    n: StrictInt = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)  # 0 or -1: off
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    rectify: StrictBool | None = None  # None: the server's default (decoding.rectify)
    epsilon: float | None = Field(None, ge=0.0, le=1.0)
    return_tokens_as_token_ids: bool = False
    # OpenAI fields that would change the text, not implemented: accepted only at their defaults
    stop: str | list[str] | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @field_validator("stop", "frequency_penalty", "presence_penalty", "logit_bias")
    @classmethod
    def _not_implemented(cls, v: Any, info: ValidationInfo) -> Any:
        if v:
            raise ValueError(f"{info.field_name} is not supported by this server (send it empty or leave it out)")
        return v

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with the usage chunk (OpenAI sends it only when asked)."""
        return self.stream_options is not None and self.stream_options.include_usage

    @field_validator("top_k")
    @classmethod
    def _top_k_off(cls, v: int) -> int:
        return 0 if v == -1 else v


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(DEFAULT_MAX_TOKENS, ge=1)  # null: the default, as OpenAI takes it
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    best_of: int | None = None

    @field_validator("max_tokens")
    @classmethod
    def _default_max_tokens(cls, v: int | None) -> int:
        return DEFAULT_MAX_TOKENS if v is None else v

    @field_validator("best_of")
    @classmethod
    def _no_best_of(cls, v: int | None) -> int | None:
        if v not in (None, 1):
            raise ValueError("best_of is not supported by this server (use n and choose client-side)")
        return v

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and (not v or any(isinstance(p, list) and not p for p in v)):
            raise ValueError("prompt must not be empty")
        return v

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo=true is not supported")
        return v


def _part_text(i: int, part: Any) -> str:
    """The text of content part ``i``; any other kind (``image_url``, ``input_audio``) cannot be honoured by a
    text-only model, so it is refused rather than dropped."""
    if not isinstance(part, dict) or part.get("type") != "text":
        what = f"has type {part.get('type')!r}" if isinstance(part, dict) else f"is a {type(part).__name__}"
        raise ValueError(f"part {i} {what}; only text parts ({{\"type\": \"text\", \"text\": ...}}) are supported")
    if not isinstance(part.get("text"), str):
        raise ValueError(f"part {i} is a text part without a string 'text'")
    return part["text"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, v: Any) -> Any:
        """OpenAI's array form of ``content`` (``[{"type": "text", "text": ...}, ...]``) as the one string the
        chat template takes: the parts' texts concatenated in order."""
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("an array of content parts must not be empty")
        return "".join(_part_text(i, part) for i, part in enumerate(v))


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
