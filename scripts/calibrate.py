"""Calibrate a saved Q_D on validation value data: `python scripts/calibrate.py value_model_path=<dir>`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rectify.calibration import calibrate
from rectify.decoding.runner import resolve_device
from rectify.model_card import refresh_calibration_section
from rectify.training.data import ValueDataModule
from rectify.value_model import ValueModel


@hydra.main(version_base="1.3", config_path="../configs", config_name="calibrate")
def main(cfg: DictConfig) -> None:
    vm = ValueModel.from_pretrained(cfg.value_model_path, device=resolve_device(cfg.device), calibration=False)
    vc = vm.value_config
    dm = ValueDataModule(vm.tokenizer, train_path=cfg.val_path, val_path=cfg.val_path, batch_size=cfg.batch_size,
                         max_length=cfg.max_length, q_min=vc.q_min, q_max=vc.q_max)
    dm.setup("validate")
    cal = calibrate(vm, dm.val_dataloader(), (vc.q_min + vc.q_max) / 2, cfg.max_knots)
    path = cal.save(cfg.value_model_path)
    vm.q_transform = cal
    card = refresh_calibration_section(cfg.value_model_path, vm)   # the card said "None" until now
    print(f"{path}: isotonic map over {cal.stats['pairs']} steps; Brier {cal.stats['brier_raw']:.4f} raw -> "
          f"{cal.stats['brier_calibrated']:.4f}; mean Q {cal.stats['mean_q_raw']:.3f} -> "
          f"{cal.stats['mean_q_calibrated']:.3f}" + (f"; model card {card} updated" if card else ""), flush=True)


if __name__ == "__main__":
    main()
