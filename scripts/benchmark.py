"""Print one JSON line per benchmark case: `python scripts/benchmark.py [bench=train_step|decoding]`."""

from __future__ import annotations

import importlib
import json
import sys

import hydra
from omegaconf import DictConfig

from rectify.benchmarks import BENCHES


@hydra.main(version_base="1.3", config_path="../configs", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    selected = [cfg.bench] if cfg.bench else list(BENCHES)
    unknown = [b for b in selected if b not in BENCHES]
    if unknown:
        sys.exit(f"unknown bench {unknown}; choose from {sorted(BENCHES)} or leave bench unset for all")
    for name in selected:
        module = importlib.import_module(BENCHES[name])
        for row in module.run(cfg[name]):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
