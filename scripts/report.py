"""Gather a sweep's evaluation results: `python scripts/report.py report.inputs=DIR` (see configs/report.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from rectify.evaluation.wandb_log import log_results
from rectify.report import write_report
from rectify.report.targets import active_targets


@hydra.main(version_base="1.3", config_path="../configs", config_name="report")
def main(cfg: DictConfig) -> None:
    r = cfg.report
    inputs = list(r.inputs) if isinstance(r.inputs, ListConfig) else str(r.inputs)
    targets = active_targets(OmegaConf.to_container(r.targets, resolve=True) if r.targets else None)
    preamble = Path(r.preamble).read_text(encoding="utf-8") if r.get("preamble") else None
    out = write_report(inputs, r.output_dir, plot_subset=r.plot_subset, targets=targets, markdown_name=r.markdown_name,
                       csv_name=r.csv_name, plot_name=r.plot_name, title=r.title, ci=r.ci,
                       preamble=preamble)
    print(out["markdown"].read_text(encoding="utf-8"))
    print(f"\nwrote {out['markdown']}, {out['csv']}, {out['plot']}")
    log_results(cfg, out["rows"], key="report", images={"tradeoff": out["plot"]}, scatter=("ppl", "tox_prob"))


if __name__ == "__main__":
    main()
