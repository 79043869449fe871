"""ROC AUC and speed of each scorer on the insults test split: `python scripts/analysis/scorer_auc.py`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from rectify.scoring import auc


@hydra.main(version_base="1.3", config_path="../../configs", config_name="scorer_auc")
def main(cfg: DictConfig) -> None:
    table = auc.run(OmegaConf.to_container(cfg.auc, resolve=True))
    md, csv_path = auc.write(table, cfg.paths.output_dir)
    print(auc.to_markdown(table))
    print(f"written: {md} and {csv_path}")


if __name__ == "__main__":
    main()
