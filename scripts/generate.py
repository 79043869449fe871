"""Generate continuations (rectified or plain): `python scripts/generate.py prompts_path=... [value_model_path=...]`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rectify.cli import run_main
from rectify.decoding.runner import run_generation


@hydra.main(version_base="1.3", config_path="../configs", config_name="generate")
def main(cfg: DictConfig) -> None:
    run_generation(cfg)


if __name__ == "__main__":
    run_main(main, "the prompts written so far are kept; rerun this command to continue")
