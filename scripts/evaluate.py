"""Evaluate generations JSONL files: `python scripts/evaluate.py eval.input=PATH` (see configs/evaluate.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rectify.cli import run_main
from rectify.evaluation.runner import run_evaluation
from rectify.evaluation.wandb_log import log_results, row_summary
from rectify.report.gather import swept_keys
from rectify.report.table import format_markdown, headline_columns, input_column


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    rows = run_evaluation(cfg)
    print(format_markdown(rows, input_column(rows) + headline_columns(rows, swept_keys(rows))))
    print(f"\nresults: {cfg.eval.output_dir}/results.csv (+ .json)")
    log_results(cfg, rows, key="evaluation", summary=row_summary(rows))


if __name__ == "__main__":
    run_main(main, "the scores of every finished file and scorer are cached; rerun this command to continue")
