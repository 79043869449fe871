"""Fine-tune our own reward model: `python scripts/train_reward_model.py [reward.data.source=jigsaw ...]`.

Prints val/test AUC and writes the export dir that `scorer=reward_model` loads (configs/train_reward_model.yaml).
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from rectify.scoring.reward_training import train_reward_model


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_reward_model")
def main(cfg: DictConfig) -> float:
    metrics = train_reward_model(cfg.reward, cfg.paths.output_dir)
    print(json.dumps(metrics, indent=2))
    return metrics["test_auc"]


if __name__ == "__main__":
    main()
