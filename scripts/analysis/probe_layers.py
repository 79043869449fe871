"""Per-layer linear probe of a frozen backbone as a dead-end detector: `python scripts/analysis/probe_layers.py`."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from rectify.analysis.layer_probe import position_features, probe_layers
from rectify.lm import load_lm
from rectify.training.data import read_value_jsonl


@hydra.main(version_base="1.3", config_path="../../configs", config_name="probe_layers")
def main(cfg: DictConfig) -> None:
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    model, tokenizer = load_lm(cfg.lm)
    model.eval()
    data = Path(cfg.data_dir)
    train, _ = read_value_jsonl(data / "train.json")
    val, _ = read_value_jsonl(data / "val.json")
    if cfg.limit_train:
        train = train[: int(cfg.limit_train)]
    layers = [int(x) for x in cfg.layers]
    feats = {name: position_features(model, tokenizer, recs, layers, int(cfg.max_length), desc=name)
             for name, recs in (("train", train), ("val", val))}
    rows = probe_layers(feats["train"], feats["val"], alpha=float(cfg.alpha))
    out = Path(cfg.paths.output_dir) / "probe_layers.json"
    out.write_text(json.dumps({"data_dir": str(data), "n_train": len(train), "n_val": len(val),
                               "val_toxic": int(feats["val"].toxic.sum()), "layers": rows}, indent=2))
    for row in rows:
        print(f"layer {row['layer']:3d}: validation AUC of the max-pooled probe {row['val_auc_max_pool']:.3f}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
