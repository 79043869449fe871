"""Evaluate generations JSONL files: `python scripts/evaluate.py eval.input=PATH` (see configs/evaluate.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rectify.evaluation.runner import run_evaluation
from rectify.evaluation.wandb_log import log_results, row_summary
from rectify.report.table import format_markdown, headline_columns


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    rows = run_evaluation(cfg)
    print(format_markdown(rows, headline_columns(rows)))
    print(f"\nresults: {cfg.eval.output_dir}/results.csv (+ .json)")
    log_results(cfg, rows, key="evaluation", summary=row_summary(rows))


if __name__ == "__main__":
    main()
