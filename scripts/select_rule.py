"""Choose a decoding rule on dev prompts: `python scripts/select_rule.py select.inputs=DIR` (configs/select_rule.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rectify.selection import DEV_TABLE, SELECTED, Criterion, write_selection


@hydra.main(version_base="1.3", config_path="../configs", config_name="select_rule")
def main(cfg: DictConfig) -> None:
    sel = OmegaConf.to_container(cfg.select, resolve=True)
    record = write_selection(sel["inputs"], Criterion.from_any(sel), sel["output_dir"], sel.get("runs"))
    out = Path(sel["output_dir"])
    print((out / DEV_TABLE).read_text(encoding="utf-8"))
    print(f"wrote {out / SELECTED}, {out / DEV_TABLE}")
    if record["selected"] is None and sel["require"]:
        sys.exit("no candidate met the criterion on dev (select.require=true)")


if __name__ == "__main__":
    main()
