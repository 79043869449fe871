"""Serve a rectified LM behind an OpenAI-compatible API: `python scripts/serve.py value_model_path=...`."""

from __future__ import annotations

import logging

import hydra
import uvicorn
from omegaconf import DictConfig

from rectify.serving.build import build_app

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    app, engine = build_app(cfg)
    mode = "rectified by default" if app.state.service.settings.rectify else "plain by default"
    log.info("serving %r (%s; Q_D %s) on http://%s:%s/v1", app.state.service.settings.model_name, mode,
             "loaded" if engine.can_rectify else "absent", cfg.serve.host, cfg.serve.port)
    uvicorn.run(app, host=cfg.serve.host, port=int(cfg.serve.port), log_level=cfg.serve.log_level)


if __name__ == "__main__":
    main()
