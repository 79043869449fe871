"""Build the served app from a ``configs/serve.yaml`` config (models loaded as ``scripts/generate.py`` does)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from rectify.decoding.config import DecodingConfig
from rectify.decoding.runner import build_sampler
from rectify.serving.app import ServeSettings, create_app
from rectify.serving.engine import Engine


def served_name(cfg: Any) -> str:
    """The model id clients send: ``serve.model_name``, else the generator's name or source."""
    if cfg.serve.get("model_name"):
        return str(cfg.serve.model_name)
    lm = OmegaConf.merge(cfg.lm, cfg.get("generator_override") or {})
    return str(lm.get("name_or_path") or lm.get("source"))


def build_app(cfg: Any):
    """``(app, engine)``: generator + optional Q_D from ``cfg``, OpenAI-compatible routes around them."""
    dec = DecodingConfig.from_any(cfg.decoding)
    engine = Engine(build_sampler(cfg), dec)
    s = cfg.serve
    settings = ServeSettings(model_name=served_name(cfg), max_logprobs=s.max_logprobs, max_tokens=s.max_tokens,
                             max_n=s.max_n, max_rows_per_request=s.max_rows_per_request,
                             max_batch_rows=s.max_batch_rows, batch_wait_ms=s.batch_wait_ms,
                             rectify=dec.rectify, epsilon=dec.epsilon)
    return create_app(engine, settings), engine
