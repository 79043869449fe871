"""Sweeps through hydra-submitit-launcher: our launcher configs extend the plugin's own (its schema checks
them, with no deprecated same-name matching), compose, a 2-point epsilon multirun of scripts/generate.py runs
through local_processes on tiny models, and trainer=ddp takes num_nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
LAUNCHERS = {"slurm": SlurmQueueConf, "local_processes": LocalQueueConf}  # ours -> the plugin's schema
EPSILONS = (0.1, 0.5)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_config_is_the_plugins_schema(name):
    ours = OmegaConf.load(CONFIGS / "hydra" / "launcher" / f"{name}.yaml")
    plugin_name = LAUNCHERS[name]._target_.rsplit(".", 1)[1].replace("Launcher", "").lower()
    assert list(ours.defaults) == [f"submitit_{plugin_name}", "_self_"]  # extends the plugin's own config
    values = OmegaConf.masked_copy(ours, [k for k in ours if k != "defaults"])
    schema = OmegaConf.structured(LAUNCHERS[name])
    assert set(values) == set(schema)  # every key written out: nothing left to the plugin's defaults
    OmegaConf.merge(schema, values)  # and each one has the plugin's type (a typo or a wrong type fails here)


@pytest.mark.parametrize("name", sorted(LAUNCHERS))
def test_launcher_composes_with_overrides(tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Hydra's same-name schema matching warns that it is deprecated
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("generate", overrides=[f"hydra/launcher={name}", "hydra.launcher.timeout_min=30"],
                          return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == LAUNCHERS[name]._target_ and launcher.timeout_min == 30


def test_ddp_trainer_takes_num_nodes():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4"])
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes, cfg.trainer.devices) == ("ddp", 2, 4)


def test_epsilon_multirun_through_local_processes(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": {"text": t}}) + "\n" for t in ("Hello there", "You are a")))
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PROJECT_ROOT": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate.py"), "-m", "debug=smoke", f"prompts_path={prompts}",
         f"decoding.epsilon={','.join(map(str, EPSILONS))}", "hydra/launcher=local_processes",
         f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in res.stdout + res.stderr
    for job, eps in enumerate(EPSILONS):  # one subdir per job, in sweep order
        out = sweep / str(job) / "generations.jsonl"
        assert len(out.read_text().splitlines()) == 2
        meta = json.loads(Path(f"{out}.meta.json").read_text())
        assert meta["config"]["decoding"]["epsilon"] == eps
    assert list((sweep / ".submitit").iterdir())  # the jobs went through submitit (its logs and pickles)
