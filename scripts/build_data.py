"""Build the offline value-model data: `python scripts/build_data.py [stage=...] [data=paper] [debug=smoke]`.

Stages: prompts -> continuations -> labels -> assemble (or `all`); each is skipped when complete and
resumes when interrupted. Outputs go to `build.out_dir` (default data/offline/).
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from rectify.cli import run_main
from rectify.data import build

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_data")
def main(cfg: DictConfig) -> None:
    results = build.run(cfg.build, cfg.stage, overwrite=cfg.overwrite, trainer=cfg.get("trainer"))
    summary = results.get("assemble")
    if summary is not None:
        print(json.dumps(summary, indent=2))
    else:
        print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    run_main(main, "finished stages (and the continuations written so far) are kept; rerun this command to continue")
