"""Every experiment and every demo-style run config composes, resolves and names groups that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rectify.value_model import ValueConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
RUN_CONFIGS = sorted(p.stem for p in CONFIGS.glob("*.yaml") if "experiment:" in p.read_text())


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_composes_into_a_valid_value_config(tmp_path, exp):
    cfg = _compose("train", f"paths.output_dir={tmp_path}", f"+experiment={exp}")
    OmegaConf.resolve(cfg)
    keys = set(ValueConfig.__dataclass_fields__)
    ValueConfig.from_any({k: v for k, v in cfg.model.items() if k in keys})


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_names_existing_data_and_experiment(name):
    cfg = _compose(name)
    assert (CONFIGS / "data" / f"{cfg.data}.yaml").is_file()
    assert cfg.experiment in EXPERIMENTS


def test_onset_configs_chain():
    assert _compose("full_onset").experiment == "smollm2_full_onset_query"
    cfg = _compose("train", "+experiment=smollm2_full_onset_query")
    assert cfg.model.init_scale_on == "query"
    assert OmegaConf.to_container(cfg.data)["train_path"].endswith("offline_full_onset/train.json")
    build = _compose("build_data", "data=offline_full_onset").build
    assert build.assemble.truncate == "dead_end" and build.continuations.k == 8
