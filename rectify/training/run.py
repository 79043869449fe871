"""``train(cfg)``: compose model, data, trainer, loggers and callbacks from the Hydra config, fit, export."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ProgressBar
from omegaconf import DictConfig, OmegaConf

from rectify.cli import command_overrides
from rectify.devices import require_accelerator
from rectify.model_card import run_card_info
from rectify.precision import resolve_precision
from rectify.training.data import ValueDataModule, require_value_data
from rectify.training.module import ValueLightningModule
from rectify.training.synthetic import write_synthetic

log = logging.getLogger(__name__)


def _instantiate_dict(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a ``{name: {_target_: ...}}`` node (loggers, callbacks); skip nulls."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]


def build_loggers(cfg: DictConfig | None) -> list[Any]:
    loggers = []
    for name, c in (cfg or {}).items():
        if c is None or "_target_" not in c:
            continue
        if name == "wandb":
            # WANDB_MODE (online / offline / disabled) wins; offline by default so runs never need a network
            c = OmegaConf.merge(c, {"mode": os.environ.get("WANDB_MODE", c.get("mode") or "offline")})
            Path(c.save_dir).mkdir(parents=True, exist_ok=True)
        loggers.append(hydra.utils.instantiate(c))
    return loggers


def finish_wandb(loggers: list[Any], failed: bool = False) -> None:
    """End the wandb run a WandbLogger of this job started. Hydra's basic launcher runs a multirun's jobs in one
    process, and a new WandbLogger reuses a live ``wandb.run``: unfinished, every job would log into job 0's run."""
    from lightning.pytorch.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish(exit_code=1 if failed else None)  # no-op without a live run (never started, rank > 0)


DATA_PATH_KEYS = ("data.train_path", "data.val_path")


def command_line_keys() -> set[str]:
    """The keys the running Hydra job's command line sets (``++data.train_path=x`` -> ``data.train_path``);
    empty outside a Hydra run (tests composing a config, scripts calling :func:`train`)."""
    return {o.split("=", 1)[0].lstrip("+~") for o in command_overrides()}


def use_synthetic_data(cfg: DictConfig) -> bool:
    """``synthetic_data.enabled``, unless the command line names data paths and not ``synthetic_data.enabled``:
    an explicit override wins over a config group (debug=smoke switches synthetic data on), as Hydra's do."""
    if not (cfg.get("synthetic_data") and cfg.synthetic_data.get("enabled")):
        return False
    given = command_line_keys()
    mine = sorted(given & set(DATA_PATH_KEYS))
    if mine and "synthetic_data.enabled" not in given:
        log.warning("training on the data given on the command line (%s), not on synthetic_data (debug=smoke "
                    "switches it on; synthetic_data.enabled=true on the command line uses it anyway)", ", ".join(mine))
        return False
    return True


def logger_cfg(cfg: DictConfig) -> DictConfig | None:
    """The logger group's loggers, or none where ``loggers_enabled`` is false (debug=smoke: also over an
    experiment's wandb) and the command line picks no logger: ``debug=smoke logger=csv`` logs to CSV."""
    if cfg.get("loggers_enabled", True):
        return cfg.get("logger")
    if any(k == "logger" or k.startswith("logger.") for k in command_line_keys()):
        log.info("loggers_enabled=false (debug=smoke), but the command line picks a logger: using it")
        return cfg.get("logger")
    return None


def build_callbacks(cfg: DictConfig, with_logger: bool) -> list[Any]:
    """The configured callbacks, less those the trainer config rules out: Lightning refuses a progress bar with
    ``trainer.enable_progress_bar=false`` and an LR monitor without a logger (logger=none, debug=smoke)."""
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not with_logger:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return callbacks


class BatchesThisFit(Callback):
    """Counts the training batches this process ran: 0 after resuming a checkpoint that had already reached the
    trainer's max_epochs / max_steps (Lightning then restores it and returns at once)."""

    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.batches += 1


def build_datamodule(cfg: DictConfig, module: ValueLightningModule, synthetic: bool | None = None) -> ValueDataModule:
    """The value data: the configured files, or (``synthetic``, default :func:`use_synthetic_data`) a generated set."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    vc = module.model.value_config
    if use_synthetic_data(cfg) if synthetic is None else synthetic:
        out = Path(cfg.paths.output_dir) / "synthetic_data"
        train, val = write_synthetic(out, cfg.synthetic_data.n_train, cfg.synthetic_data.n_val,
                                     cfg.get("seed") or 0, tokenizer=module.tokenizer)
        # loud: these replace the configured files (debug=smoke turns this on over an experiment's data)
        log.warning("synthetic_data.enabled: training on a generated set in %s instead of data.train_path=%s, "
                    "data.val_path=%s (synthetic_data.enabled=false, or those paths on the command line, keeps "
                    "them)", out, data.get("train_path"), data.get("val_path"))
        data["train_path"], data["val_path"] = str(train), str(val)
    data.pop("_target_", None)
    return ValueDataModule(module.tokenizer, q_min=vc.q_min, q_max=vc.q_max, **data)


def fit_calibration(module: ValueLightningModule, datamodule: ValueDataModule,
                    max_knots: int = 200) -> dict[str, float]:
    """Fit Q_D's calibration on the validation split and attach it (saved with the export, named in its card)."""
    from rectify.calibration import calibrate

    try:
        cal = calibrate(module.model.eval(), datamodule.val_dataloader(), module.threshold, max_knots)
    except ValueError as exc:  # e.g. a validation split with one class only: keep the raw Q_D
        log.warning("no calibration fitted: %s", exc)
        return {}
    module.model.q_transform = cal
    print(f"calibration (isotonic, {cal.stats['pairs']} validation steps): Brier {cal.stats['brier_raw']:.4f} raw "
          f"-> {cal.stats['brier_calibrated']:.4f} calibrated", flush=True)
    return {f"calibration/{k}": float(v) for k, v in cal.stats.items()}


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """The configured Lightning Trainer, ``precision: auto`` resolved first (Lightning has no such value): bf16-mixed
    where bf16 is native (rectify/precision.py), else 32-true."""
    require_accelerator(trainer_cfg.get("accelerator"))
    if trainer_cfg.get("precision") == "auto":
        kwargs["precision"] = resolve_precision(trainer_cfg.precision, trainer_cfg.get("accelerator"))
    return hydra.utils.instantiate(trainer_cfg, **kwargs)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit Q_D; export the final model to ``<run dir>/value_model``; return the final logged metrics."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    require_accelerator(cfg.trainer.get("accelerator"))  # before any model loads
    synthetic = use_synthetic_data(cfg)
    if not synthetic:
        require_value_data(cfg.data.train_path, cfg.data.val_path)
        if cfg.get("synthetic_data") and cfg.synthetic_data.get("enabled"):  # command-line data won over smoke's
            cfg.synthetic_data.enabled = False  # the export's card records the data really used
    module = ValueLightningModule(cfg.model)
    datamodule = build_datamodule(cfg, module, synthetic)
    loggers = build_loggers(logger_cfg(cfg))
    ran = BatchesThisFit()
    callbacks = [*build_callbacks(cfg, with_logger=bool(loggers)), ran]
    failed = True
    try:
        trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if cfg.get("ckpt_path") and not ran.batches:
            log.warning("%s had already reached the trainer's end (epoch %d, step %d; trainer.max_epochs=%s, "
                        "max_steps=%s): nothing was trained. Raise those to train on; validating the checkpoint "
                        "for the export", cfg.ckpt_path, trainer.current_epoch, trainer.global_step,
                        cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps"))
            trainer.validate(module, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if cfg.get("export", True) and trainer.is_global_zero:
            cal_cfg = cfg.get("calibration") or {}
            if cal_cfg.get("enabled", False):
                metrics |= fit_calibration(module, datamodule, int(cal_cfg.get("max_knots", 200)))
            card = run_card_info(cfg, metrics, datamodule.train_path, datamodule.val_path)  # README.md of the export
            path = module.model.save_pretrained(Path(cfg.paths.output_dir) / "value_model", card=card)
            metrics["export"] = str(path)  # type: ignore[assignment]
            print(f"value model exported to {path}", flush=True)
        failed = False
    finally:  # also when the job raises: the next job of a multirun must start a run of its own
        finish_wandb(loggers, failed)
    log.info("final metrics: %s", {k: v for k, v in metrics.items() if k != "export"})
    return metrics
