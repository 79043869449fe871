"""Fine-tune a transformers encoder as a binary toxicity classifier (our own reward model), report AUC,
and export a directory ``scorer=reward_model`` loads (``save_pretrained`` model + tokenizer + metrics)."""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import BinaryAUROC

from rectify import assets
from rectify.scoring.reward_data import RewardDataModule, load_splits

log = logging.getLogger(__name__)


def resolve_pretrained(name: str) -> str:
    """``minilm`` -> the bundled all-MiniLM-L6-v2 dir; anything else is a Hub id or a local path."""
    if name == "minilm":
        return str(assets.get_asset("minilm") / "model")
    return name


class RewardClassifier(L.LightningModule):
    """AutoModelForSequenceClassification (num_labels=2) with AdamW + linear warmup/decay and AUC metrics."""

    def __init__(self, pretrained: str, *, lr: float = 5e-5, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                 freeze_embeddings: bool = False, dropout: float | None = None):
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        self.save_hyperparameters()
        kwargs: dict[str, Any] = {"num_labels": 2}
        if dropout is not None:
            kwargs["classifier_dropout"] = dropout
        self.model = AutoModelForSequenceClassification.from_pretrained(resolve_pretrained(pretrained), **kwargs)
        self.model.train()  # from_pretrained returns eval mode; Lightning keeps modes as found (dropout on)
        self.model.config.id2label = {0: "non_toxic", 1: "toxic"}
        self.model.config.label2id = {"non_toxic": 0, "toxic": 1}
        if freeze_embeddings:
            self.model.get_input_embeddings().requires_grad_(False)
        self.val_auc = BinaryAUROC()
        self.test_auc = BinaryAUROC()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _eval_step(self, batch, metric: BinaryAUROC, prefix: str):
        logits = self(batch)
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        metric.update(torch.softmax(logits.float(), -1)[:, 1], batch["labels"])
        self.log(f"{prefix}/loss", loss, batch_size=len(batch["labels"]))
        self.log(f"{prefix}/auc", metric, prog_bar=True, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, self.val_auc, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, self.test_auc, "test")

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        hp = self.hparams
        decay, no_decay = [], []
        for _name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_linear_schedule_with_warmup(opt, int(hp.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_reward_model(cfg: DictConfig | dict, output_dir: str | Path) -> dict[str, Any]:
    """Run one training from the ``reward`` config node; returns the metrics (also written to the export)."""
    from hydra.utils import instantiate
    from transformers import AutoTokenizer

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    output_dir = Path(output_dir)
    L.seed_everything(int(cfg.seed), workers=True)
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    splits = load_splits(OmegaConf.to_container(cfg.data, resolve=True))
    log.info("reward-model data: %s", splits.summary())
    pretrained = str(cfg.model.pretrained)
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(pretrained))
    dm = RewardDataModule(splits, tokenizer, max_length=cfg.model.max_length, batch_size=cfg.batch_size,
                          eval_batch_size=cfg.eval_batch_size, bucket_batches=cfg.bucket_batches, seed=cfg.seed)
    module = RewardClassifier(pretrained, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                              warmup_ratio=cfg.optim.warmup_ratio, freeze_embeddings=cfg.model.freeze_embeddings,
                              dropout=cfg.model.get("dropout"))
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger,
                        default_root_dir=str(output_dir))
    trainer.fit(module, datamodule=dm)
    val = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if "val/auc" not in val:  # validation did not run at the end of fit (e.g. limit_val_batches=0)
        val = trainer.validate(module, datamodule=dm, verbose=False)[0]
    test = trainer.test(module, datamodule=dm, verbose=False)[0]
    seconds = time.perf_counter() - start
    metrics = {
        "val_auc": float(val["val/auc"]),
        "test_auc": float(test["test/auc"]),
        "val_loss": float(val["val/loss"]),
        "test_loss": float(test["test/loss"]),
        "seconds": round(seconds, 1),
        # CPU time says how much work the run was, whatever else shares the machine: on an idle machine
        # with N threads the wall time is between cpu_s / N and cpu_s.
        "cpu_s": round(_cpu_seconds() - cpu_start, 1),
        "torch_threads": torch.get_num_threads(),
        "pretrained": pretrained,
        "data": splits.summary(),
    }
    export_dir = Path(cfg.export_dir)
    export(module, tokenizer, export_dir, metrics, OmegaConf.to_container(cfg, resolve=True))
    metrics["export_dir"] = str(export_dir)
    (output_dir / "reward_model_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def export(module: RewardClassifier, tokenizer, export_dir: Path, metrics: dict, config: dict) -> None:
    """save_pretrained model + tokenizer, plus metrics and the training config for provenance."""
    export_dir.mkdir(parents=True, exist_ok=True)
    module.model.save_pretrained(export_dir)
    tokenizer.save_pretrained(export_dir)
    (export_dir / "reward_model.json").write_text(json.dumps({"metrics": metrics, "config": config}, indent=2))


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
