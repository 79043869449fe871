"""rectify.analysis.qd_auc scores a saved Q_D on a value file exactly as its training run's validation did."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from rectify.analysis.qd_auc import cross_table, dead_end_auc
from rectify.training.data import ValueDataModule
from rectify.training.module import ValueLightningModule
from rectify.training.synthetic import write_synthetic


def test_saved_q_d_reproduces_the_runs_validation_auc(tmp_path):
    torch.manual_seed(0)
    cfg = {"backbone": {"source": "hub", "name_or_path": "tiny", "family": "gpt2",
                        "random_init": {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "seed": 0}},
           "optimizer": {"lr": 3e-3}, "scheduler": {"name": "none", "warmup_steps": 0}}
    module = ValueLightningModule(cfg)
    tok = module.tokenizer
    train, val = write_synthetic(tmp_path / "data", 48, 24, tokenizer=tok)
    dm = ValueDataModule(tok, str(train), str(val), batch_size=8, max_length=96)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    logged = {k: float(trainer.callback_metrics[k]) for k in ("val/auc_min_q", "val/auc_final_q")}
    module.model.save_pretrained(tmp_path / "qd")
    got = dead_end_auc(tmp_path / "qd", val, batch_size=8, max_length=96)
    assert got == pytest.approx(logged, abs=1e-6)
    # the cross table has one row per Q_D and one column per value file
    table = cross_table([str(tmp_path / "qd")], [str(val), str(train)], batch_size=8).splitlines()
    assert table[2].startswith(f"| {tmp_path / 'qd'} | {got['val/auc_min_q']:.4f} |")
