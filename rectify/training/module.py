"""LightningModule for Q_D: SARSA loss, AdamW + warmup schedule, Polyak target update per optimizer step."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import BinaryAUROC

from rectify.precision import resolve_dtype
from rectify.td import TDConfig, sarsa_loss
from rectify.value_model import ValueConfig, ValueModel

log = logging.getLogger(__name__)

# keys of the `model` config group that are not ValueConfig fields
MODEL_KEYS = ("backbone", "td", "optimizer", "scheduler", "gathered", "cache_frozen_layers", "cache_batch_size",
              "cache_dtype")


def _plain(cfg: Any) -> dict:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def split_model_config(cfg: Mapping) -> tuple[dict, ValueConfig, TDConfig, dict, dict]:
    """``model`` config -> (backbone LM config, ValueConfig, TDConfig, optimizer, scheduler)."""
    cfg = _plain(cfg)
    value_keys = {f.name for f in fields(ValueConfig)}
    unknown = set(cfg) - value_keys - set(MODEL_KEYS) - {"_target_"}
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; value keys: {sorted(value_keys)}, "
                         f"others: {list(MODEL_KEYS)}")
    value = ValueConfig.from_any({k: v for k, v in cfg.items() if k in value_keys})
    td = TDConfig(**_plain(cfg.get("td")))
    return _plain(cfg.get("backbone")), value, td, _plain(cfg.get("optimizer")), _plain(cfg.get("scheduler"))


class ValueLightningModule(L.LightningModule):
    """Trains a :class:`ValueModel` from value data; the target head lives in its state dict (checkpoints)."""

    def __init__(self, model_cfg: Mapping, model: ValueModel | None = None):
        super().__init__()
        self.save_hyperparameters({"model_cfg": _plain(model_cfg)})
        lm_cfg, value_cfg, self.td_cfg, self.optim_cfg, self.sched_cfg = split_model_config(model_cfg)
        plain = _plain(model_cfg)
        self.gathered = bool(plain.get("gathered", True))
        self.cache_frozen_layers = bool(plain.get("cache_frozen_layers", False))
        self.cache_batch_size = int(plain.get("cache_batch_size") or 32)
        # bf16 halves the cache's memory (one [T, H] tensor per trajectory); the blocks above read it in their dtype
        self.cache_dtype = resolve_dtype(plain.get("cache_dtype") or "float32", what="frozen-layer cache dtype")
        self.model = model if model is not None else ValueModel.from_lm(lm_cfg, value_cfg)
        vc = self.model.value_config
        self.threshold = (vc.q_min + vc.q_max) / 2  # rewards below it are dead ends (toxic endings)
        # counts optimizer steps seen by the Polyak hook; saved with checkpoints for resume checks
        self.register_buffer("polyak_updates", torch.zeros((), dtype=torch.long))
        self.val_auc_min = BinaryAUROC()
        self.val_auc_final = BinaryAUROC()
        self.val_q_toxic = MeanMetric()
        self.val_q_clean = MeanMetric()
        self.val_n_toxic = SumMetric()
        self.val_n = SumMetric()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    # ------------------------------------------------------------------ steps

    def _step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        hidden = None
        if batch.get("lower") is not None:  # cached frozen layers: run only the trained top blocks
            hidden = self.model.upper_hidden(batch["lower"], batch["attention_mask"])
        return sarsa_loss(self.model, batch["input_ids"], batch["attention_mask"], batch["reward"],
                          batch.get("prompt_len"), self.td_cfg, gathered=self.gathered, hidden=hidden)

    def on_fit_start(self) -> None:
        """With ``cache_frozen_layers``: compute the frozen lower blocks once for every trajectory.

        Each epoch then runs only the trained top blocks and the head: with 2 of SmolLM2's 30 blocks
        trained, an epoch costs a small fraction of a full forward pass. Exact: the frozen blocks are
        deterministic (no dropout in Llama-family attention/MLP at these settings).
        """
        if not self.cache_frozen_layers:
            return
        dm = getattr(self.trainer, "datamodule", None)
        sets = [ds for ds in (getattr(dm, "train_set", None), getattr(dm, "val_set", None)) if ds is not None]
        if not sets:
            log.warning("cache_frozen_layers: no datamodule datasets to cache; training without the cache")
            return
        from tqdm.auto import tqdm

        collate = dm.collate
        was_training = self.model.training
        self.model.eval()
        for ds in sets:
            items = [it for it in ds.items if "lower" not in it]
            order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))  # little padding
            chunks = [order[i: i + self.cache_batch_size] for i in range(0, len(order), self.cache_batch_size)]
            for chunk in tqdm(chunks, desc="caching frozen layers", disable=not self.trainer.is_global_zero):
                batch = collate([items[i] for i in chunk])
                ids = batch["input_ids"].to(self.device)
                mask = batch["attention_mask"].to(self.device)
                lower = self.model.lower_hidden(ids, mask).to(self.cache_dtype).cpu()
                for row, i in enumerate(chunk):
                    n = len(items[i]["input_ids"])
                    items[i]["lower"] = lower[row, :n].clone()
        self.model.train(was_training)

    def _summaries(self, batch, out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per trajectory: is-toxic label, min_t Q and final-step Q (over continuation positions when known)."""
        q, valid = out["q"].float(), out["valid"]
        pos = valid
        if batch.get("prompt_len") is not None:
            from rectify.td import prompt_mask

            cont = valid & prompt_mask(batch["attention_mask"], batch["prompt_len"])
            pos = torch.where(cont.any(-1, keepdim=True), cont, valid)
        q_min = torch.where(pos, q, torch.full_like(q, float("inf"))).min(-1).values
        last = valid & ~torch.nn.functional.pad(valid[:, 1:], (0, 1), value=False)
        q_final = (q * last).sum(-1)
        q_mean = (q * pos).sum(-1) / pos.sum(-1).clamp_min(1)
        toxic = (batch["reward"] < self.threshold).long()
        return toxic, q_min, q_final, q_mean

    def training_step(self, batch, batch_idx):
        out = self._step(batch)
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        toxic, _, _, q_mean = self._summaries(batch, out)
        if toxic.any():
            self.log("train/q_toxic", q_mean[toxic.bool()].mean(), on_step=False, on_epoch=True, batch_size=bs)
        if (~toxic.bool()).any():
            self.log("train/q_clean", q_mean[~toxic.bool()].mean(), on_step=False, on_epoch=True, batch_size=bs)
        return out["loss"]

    def validation_step(self, batch, batch_idx):
        out = self._step(batch)
        bs = batch["input_ids"].shape[0]
        self.log("val/loss", out["loss"], on_step=False, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=bs)
        toxic, q_min, q_final, q_mean = self._summaries(batch, out)
        # a dead-end detector: a higher score (-Q) should mean a toxic ending
        self.val_auc_min.update(-q_min, toxic)
        self.val_auc_final.update(-q_final, toxic)
        # weighted updates on every rank and batch, so the cross-rank sync in compute() always matches
        self.val_q_toxic.update(q_mean, weight=toxic.float())
        self.val_q_clean.update(q_mean, weight=1.0 - toxic.float())
        self.val_n_toxic.update(toxic.float().sum())
        self.val_n.update(float(toxic.numel()))

    def on_validation_epoch_end(self) -> None:
        # compute() syncs across ranks, so every rank calls it and the decisions below use synced values
        # (a rank-dependent branch around a sync would hang DDP)
        n_toxic, n = float(self.val_n_toxic.compute()), float(self.val_n.compute())
        two_classes = 0 < n_toxic < n  # an AUC needs both toxic and clean endings
        for name, metric in (("val/auc_min_q", self.val_auc_min), ("val/auc_final_q", self.val_auc_final),
                             ("val/q_toxic", self.val_q_toxic), ("val/q_clean", self.val_q_clean)):
            value = metric.compute() if metric.update_count else None
            metric.reset()
            if value is None or not torch.isfinite(value) or (name.startswith("val/auc") and not two_classes):
                continue
            self.log(name, value, prog_bar=name == "val/auc_min_q")
        self.log("val/toxic_share", n_toxic / max(n, 1.0))
        self.val_n_toxic.reset()
        self.val_n.reset()

    # ------------------------------------------------------------------ checkpoints: what training changes

    def fixed_weight_names(self) -> list[str]:
        """State-dict keys of the weights training never changes: frozen parameters, and the target head's copies
        of frozen online-head ones (Polyak averaging of equal tensors leaves them equal). They are most of Q_D's
        bytes (the frozen blocks and the vocabulary-wide head) and come back from the model config."""
        params = dict(self.named_parameters(remove_duplicate=False))   # tied aliases too: each is a state-dict key

        def fixed(name: str) -> bool:
            twin = name.replace("model.target_head.", "model.head.", 1)
            return not params[name].requires_grad and (twin == name or not params[twin].requires_grad)

        return [n for n in params if fixed(n)]

    def fixed_weight_fingerprint(self) -> str:
        """A digest of the fixed weights' values (computed once: they do not change). Zeros are hashed as +0: the
        Polyak step turns the target head's -0.0 into +0.0, a change of bits, not of value."""
        if getattr(self, "_fixed_fingerprint", None) is None:
            params = dict(self.named_parameters(remove_duplicate=False))
            h = hashlib.blake2b(digest_size=16)
            for name in sorted(self.fixed_weight_names()):
                w = (params[name].detach().cpu() + 0).contiguous()   # -0.0 + 0 = +0.0
                h.update(f"{name}:{w.dtype}:{tuple(w.shape)};".encode())
                h.update(w.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fixed_fingerprint = h.hexdigest()
        return self._fixed_fingerprint

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only what training changes (the demo's Q_D: 747 MB -> about 50 MB per checkpoint), with a
        fingerprint of the rest so a resume onto other fixed weights is refused instead of silently mixed."""
        names = self.fixed_weight_names()
        for name in names:
            checkpoint["state_dict"].pop(name, None)
        checkpoint["fixed_weights"] = {"count": len(names), "fingerprint": self.fixed_weight_fingerprint()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the fixed weights back from this module (built from the same config) before Lightning loads."""
        saved = checkpoint.get("fixed_weights")
        if saved is None:   # a checkpoint with every weight
            return
        names = self.fixed_weight_names()
        if len(names) != saved["count"] or self.fixed_weight_fingerprint() != saved["fingerprint"]:
            raise ValueError("this checkpoint was trained on other frozen weights than this config builds (another "
                             "backbone, layer count or freezing): resume with the config it was trained with")
        own = self.state_dict()
        checkpoint["state_dict"].update({name: own[name] for name in names})

    # ------------------------------------------------------------------ optimisation

    def optimizer_step(self, *args, **kwargs) -> None:
        """One real optimizer step (Lightning calls this once per accumulated batch), then Polyak."""
        super().optimizer_step(*args, **kwargs)
        self.model.polyak_update()
        self.polyak_updates += 1

    def configure_optimizers(self):
        cfg = {"lr": 3e-4, "weight_decay": 0.0, "betas": (0.9, 0.999), "eps": 1e-8} | self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            # biases and norm weights (1-D) are not decayed: decay there only shrinks useful offsets
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups = [{"params": decay, "weight_decay": cfg["weight_decay"]},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"])
        sched = {"name": "linear", "warmup_steps": 0, "warmup_ratio": None} | self.sched_cfg
        if sched["name"] in (None, "none", "constant") and not sched["warmup_steps"]:
            return opt
        from transformers import get_scheduler

        total = int(self.trainer.estimated_stepping_batches)
        warmup = sched["warmup_steps"]
        if sched.get("warmup_ratio"):
            warmup = int(sched["warmup_ratio"] * total)
        name = "constant_with_warmup" if sched["name"] in (None, "none", "constant") else sched["name"]
        scheduler = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
