"""Which layer of a frozen backbone best tells toxic endings apart: a per-layer linear probe.

Before spending CPU hours on Q_D training it helps to know how much dead-end signal each layer's features
carry and where it peaks: that sets how far the backbone can be truncated (``model.backbone.num_layers``).
The probe mirrors Q_D's Monte-Carlo objective with a linear model: every continuation position's hidden
state is regressed (ridge, MSE) on its trajectory's terminal toxicity (1 toxic, 0 clean), and a trajectory's
score is the max over its positions (= ``min_t Q``, the same pooling as ``val/auc_min_q``). It is fitted on
the train split and scored by ROC AUC on the validation split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from rectify.training.data import ValueRecord

log = logging.getLogger(__name__)


@dataclass
class PositionFeatures:
    """Hidden states of every scored position, per layer, and which trajectory each position belongs to."""

    layers: dict[int, np.ndarray]  # layer -> [positions, hidden]
    owner: np.ndarray  # [positions] index of the trajectory
    toxic: np.ndarray  # [trajectories] 1 = dead end


@torch.inference_mode()
def position_features(model: Any, tokenizer: Any, records: list[ValueRecord], layers: list[int],
                      max_length: int, threshold: float = -0.5, desc: str = "features") -> PositionFeatures:
    """Hidden states (``output_hidden_states``; index 0 = embeddings) at the continuation positions.

    Positions from the last prompt token on (the state after the prompt) to the last token; the whole text
    when ``prompt_len`` is unknown. One trajectory at a time: no padding to get wrong, and the data sets this
    is meant for (a few thousand short texts) fit comfortably.
    """
    n_layers = model.config.get_text_config().num_hidden_layers
    bad = [layer for layer in layers if not 0 <= layer <= n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} is outside 0..{n_layers} for this backbone")
    feats: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    owner: list[np.ndarray] = []
    for i, rec in enumerate(tqdm(records, desc=desc)):
        ids = tokenizer(rec.text, return_tensors="pt", truncation=True, max_length=max_length).input_ids
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
        start = min(max((rec.prompt_len or 1) - 1, 0), ids.shape[1] - 1)
        for layer in layers:
            feats[layer].append(hidden[layer][0, start:].float().numpy())
        owner.append(np.full(ids.shape[1] - start, i))
    toxic = np.array([int(r.reward <= threshold) for r in records])
    return PositionFeatures({k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(owner), toxic)


def max_pool(scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per trajectory, the highest position score (a risk score; ``-min_t Q`` for a value model)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, scores)
    return out


def probe_layers(train: PositionFeatures, val: PositionFeatures, alpha: float = 100.0) -> list[dict[str, float]]:
    """Fit one ridge probe per layer on ``train``; the validation AUC of its max-pooled score, per layer."""
    if len(set(val.toxic.tolist())) < 2:
        raise ValueError("the validation split needs both toxic and clean trajectories for an AUC")
    if len(set(train.toxic.tolist())) < 2:  # the probe would learn a constant: AUC 0.5 at every layer
        raise ValueError("the training split needs both toxic and clean trajectories to fit a probe (a larger "
                         "limit_train?)")
    rows = []
    for layer, x_train in train.layers.items():
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6  # standardise with train statistics only
        probe = Ridge(alpha=alpha).fit((x_train - mean) / std, train.toxic[train.owner])
        scores = probe.predict((val.layers[layer] - mean) / std)
        pooled = max_pool(scores, val.owner, len(val.toxic))
        rows.append({"layer": layer, "val_auc_max_pool": float(roc_auc_score(val.toxic, pooled))})
        log.info("layer %d: validation AUC %.3f", layer, rows[-1]["val_auc_max_pool"])
    return rows
