"""DDP on CPU (2 spawned processes, gloo): training runs and the target heads stay identical across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from rectify.training.module import ValueLightningModule
from rectify.training.run import build_datamodule, build_trainer

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")


class TargetHeadsAgree(L.Callback):
    """In every rank: gather the flattened target head from all ranks and record the largest difference."""

    def __init__(self, out: str):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.model.target_head.parameters()])
        online = torch.cat([p.detach().flatten() for p in pl_module.model.head.parameters()])
        gathered = pl_module.all_gather(flat)  # [world, n]
        if trainer.is_global_zero:
            Path(self.out).write_text(json.dumps({
                "world": int(gathered.shape[0]),
                "max_diff": float((gathered - gathered[0]).abs().max()),
                "moved": float((flat - online).abs().max()),
                "steps": int(trainer.global_step), "polyak": int(pl_module.polyak_updates),
            }))


@pytest.mark.slow
def test_ddp_spawn_two_cpu_processes(tmp_path):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", "+experiment=smollm2", "debug=smoke",
                                          "trainer=ddp_sim", "data.batch_size=8"])
    module = ValueLightningModule(cfg.model)
    dm = build_datamodule(cfg, module)
    out = tmp_path / "ddp.json"
    trainer = build_trainer(  # configs/trainer/ddp_sim.yaml: cpu, 2 devices, ddp_spawn (precision auto)
        cfg.trainer, logger=False, enable_progress_bar=False, enable_checkpointing=False,
        callbacks=[TargetHeadsAgree(str(out))])
    assert trainer.world_size == 2
    trainer.fit(module, datamodule=dm)
    res = json.loads(out.read_text())
    assert res["world"] == 2 and res["steps"] == 3 and res["polyak"] == 3
    assert res["max_diff"] == 0.0
    assert res["moved"] > 0  # the target head is a lagging copy, not the online head
