"""A saved Q_D's dead-end AUC on any value-data file: compare Q_Ds on the *same* trajectories.

Each ``train.py`` run reports ``val/auc_min_q`` on its own validation file; two runs built from different
samples of the same prompts differ by sampling noise as well as by what is being compared (e.g. bf16 vs fp32
data, issue 13). Scoring every Q_D on every file separates the two. The metric is the training module's own
(``ValueLightningModule.validation_step`` under ``trainer.validate``) on raw Q (no calibration map: an isotonic
map's flat steps would add ties).

    python -m rectify.analysis.qd_auc --value-model A/value_model --value-model B/value_model \
        --val data/x/val.json --val data/y/val.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch

from rectify.training.data import ValueDataModule
from rectify.training.module import ValueLightningModule
from rectify.value_model import ValueModel

KEYS = ("val/auc_min_q", "val/auc_final_q")


def load_raw(value_model: str | Path) -> ValueModel:
    """A saved Q_D in fp32 without its calibration map (raw Q)."""
    return ValueModel.from_pretrained(value_model, dtype=torch.float32, calibration=False)


def dead_end_auc(value_model: str | Path | ValueModel, val_path: str | Path, batch_size: int = 32,
                 max_length: int = 96) -> dict[str, float]:
    """``{val/auc_min_q, val/auc_final_q}`` of a Q_D (a saved dir, or one from :func:`load_raw`) on the
    trajectories in ``val_path``.

    ``max_length`` must match the training run's ``data.max_length`` (the recipe's is 96) for the numbers to
    equal the run's own validation metrics."""
    model = value_model if isinstance(value_model, ValueModel) else load_raw(value_model)
    module = ValueLightningModule({}, model=model)
    vc = model.value_config
    data = ValueDataModule(model.tokenizer, train_path=str(val_path), val_path=str(val_path), batch_size=batch_size,
                           max_length=max_length, q_min=vc.q_min, q_max=vc.q_max)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    out = trainer.validate(module, datamodule=data, verbose=False)[0]
    return {k: float(out[k]) for k in KEYS if k in out}


def auc_matrix(models: Mapping[str, str | Path], vals: Mapping[str, str | Path], batch_size: int = 32,
               max_length: int = 96) -> dict[tuple[str, str], float]:
    """``val/auc_min_q`` of every Q_D (by name) on every value file (by name); each Q_D is loaded once."""
    out = {}
    for name, path in models.items():
        model = load_raw(path)
        for val_name, val_path in vals.items():
            out[(name, val_name)] = dead_end_auc(model, val_path, batch_size, max_length)["val/auc_min_q"]
    return out


def cross_table(models: list[str], vals: list[str], batch_size: int = 32, max_length: int = 96) -> str:
    """Markdown: one row per Q_D, one column per value file, cells ``min_t Q AUC``."""
    auc = auc_matrix({m: m for m in models}, {v: v for v in vals}, batch_size, max_length)
    lines = ["| Q_D \\ trajectories | " + " | ".join(vals) + " |", "|---|" + "---|" * len(vals)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(f"{auc[(m, v)]:.4f}" for v in vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--value-model", action="append", required=True, help="a saved Q_D dir (repeatable)")
    ap.add_argument("--val", action="append", required=True, help="a value-data file, e.g. val.json (repeatable)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=96)
    args = ap.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    print(cross_table(args.value_model, args.val, args.batch_size, args.max_length))


if __name__ == "__main__":
    main()
