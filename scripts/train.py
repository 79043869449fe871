"""Train Q_D: `python scripts/train.py +experiment=smollm2` (see configs/train.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rectify.training.run import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # returned for Hydra sweepers (e.g. optuna): the validation loss, lower is better
    return metrics.get("val/loss")


if __name__ == "__main__":
    main()
