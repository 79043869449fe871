"""The Jigsaw Bi-LSTM classifier (Embedding -> BiLSTM -> global max-pool -> Dense relu -> Dense sigmoid) in
PyTorch, with loaders for the two Keras weight files it ships as.

Both shipped models share this architecture (tox-block's ``lstm_multi_label.get_model`` and
toxic-comment-classifier's ``model.py``). They differ in file layout (Keras 2 full-model ``.h5`` vs Keras 3
``.weights.h5``) and in the LSTM's recurrent activation: tox-block was saved by tf.keras 2.2.4 with
``hard_sigmoid`` (Keras 2 definition: clip(0.2 x + 0.5, 0, 1)); Keras 3 defaults to ``sigmoid``. A fused
``nn.LSTM`` cannot use hard_sigmoid, so the recurrence is written out (gate order i, f, c, o, as in Keras).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn


def keras2_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """tf.keras 2.x ``hard_sigmoid`` (Keras 3 changed it to relu6(x + 3) / 6; the weights predate that)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


ACTIVATIONS = {"sigmoid": torch.sigmoid, "hard_sigmoid": keras2_hard_sigmoid, "tanh": torch.tanh}


@dataclass
class KerasLSTMWeights:
    """One LSTM direction in Keras layout: kernel [in, 4u], recurrent [u, 4u], bias [4u]; gates i, f, c, o."""

    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray


@dataclass
class BiLSTMWeights:
    embeddings: np.ndarray
    forward: KerasLSTMWeights
    backward: KerasLSTMWeights
    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    out_kernel: np.ndarray
    out_bias: np.ndarray
    recurrent_activation: str = "sigmoid"
    activation: str = "tanh"


class KerasLSTM(nn.Module):
    """A single-direction LSTM with Keras semantics (one bias, configurable recurrent activation)."""

    def __init__(self, w: KerasLSTMWeights, recurrent_activation: str, activation: str = "tanh"):
        super().__init__()
        self.units = w.recurrent_kernel.shape[0]
        self.kernel = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w.kernel)), requires_grad=False)
        self.recurrent_kernel = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w.recurrent_kernel)),
                                             requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(np.ascontiguousarray(w.bias)), requires_grad=False)
        self.ract = ACTIVATIONS[recurrent_activation]
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """x [B, T, in] -> hidden states [B, T, units] (in input order, also when run in reverse)."""
        B, T, _ = x.shape
        u = self.units
        xz = torch.addmm(self.bias, x.reshape(B * T, -1), self.kernel).view(B, T, 4 * u)
        h = x.new_zeros(B, u)
        c = x.new_zeros(B, u)
        outs = [None] * T
        steps = range(T - 1, -1, -1) if reverse else range(T)
        for t in steps:
            z = xz[:, t] + h @ self.recurrent_kernel
            i = self.ract(z[:, :u])
            f = self.ract(z[:, u : 2 * u])
            c = f * c + i * self.act(z[:, 2 * u : 3 * u])
            o = self.ract(z[:, 3 * u :])
            h = o * self.act(c)
            outs[t] = h
        return torch.stack(outs, dim=1)


class BiLSTMClassifier(nn.Module):
    """Embedding -> BiLSTM (concat) -> max over time -> Dense relu -> Dense sigmoid (multi-label)."""

    def __init__(self, w: BiLSTMWeights):
        super().__init__()
        self.embedding = nn.Embedding.from_pretrained(torch.from_numpy(w.embeddings), freeze=True)
        self.fwd = KerasLSTM(w.forward, w.recurrent_activation, w.activation)
        self.bwd = KerasLSTM(w.backward, w.recurrent_activation, w.activation)
        self.dense = nn.Linear(*w.dense_kernel.shape)
        self.out = nn.Linear(*w.out_kernel.shape)
        with torch.no_grad():
            self.dense.weight.copy_(torch.from_numpy(w.dense_kernel.T))
            self.dense.bias.copy_(torch.from_numpy(w.dense_bias))
            self.out.weight.copy_(torch.from_numpy(w.out_kernel.T))
            self.out.bias.copy_(torch.from_numpy(w.out_bias))
        self.requires_grad_(False)
        self.eval()

    @property
    def vocab_size(self) -> int:
        return self.embedding.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (Keras-padded, no mask: the pad id 0 has a trained embedding) -> probs [B, labels]."""
        x = self.embedding(ids)
        h = torch.cat([self.fwd(x), self.bwd(x, reverse=True)], dim=-1)
        pooled = h.max(dim=1).values
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))


def _arr(f: h5py.File, key: str, path: Path) -> np.ndarray:
    if key not in f:
        raise ValueError(f"{path}: missing weight {key!r}; not the expected Bi-LSTM layout")
    return np.asarray(f[key], dtype=np.float32)


def load_keras2_h5(path: str | Path) -> BiLSTMWeights:
    """A tf.keras 2 full-model ``.h5`` (tox-block): weights under ``model_weights/`` plus ``model_config``."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        layers = {layer["class_name"]: layer["config"] for layer in config["config"]["layers"]}
        lstm_cfg = layers["Bidirectional"]["layer"]["config"]
        if layers["Bidirectional"].get("merge_mode", "concat") != "concat":
            raise ValueError(f"{path}: only merge_mode='concat' is supported")
        if layers["Embedding"].get("mask_zero"):
            raise ValueError(f"{path}: mask_zero embeddings are not supported")
        if not lstm_cfg.get("use_bias", True):
            raise ValueError(f"{path}: LSTM without bias is not supported")
        mw = "model_weights"
        bi = f"{mw}/bidirectional/bidirectional"

        def lstm(direction: str) -> KerasLSTMWeights:
            p = f"{bi}/{direction}_lstm"
            return KerasLSTMWeights(_arr(f, f"{p}/kernel:0", path), _arr(f, f"{p}/recurrent_kernel:0", path),
                                    _arr(f, f"{p}/bias:0", path))

        return BiLSTMWeights(
            embeddings=_arr(f, f"{mw}/embedding/embedding/embeddings:0", path),
            forward=lstm("forward"),
            backward=lstm("backward"),
            dense_kernel=_arr(f, f"{mw}/dense/dense/kernel:0", path),
            dense_bias=_arr(f, f"{mw}/dense/dense/bias:0", path),
            out_kernel=_arr(f, f"{mw}/dense_1/dense_1/kernel:0", path),
            out_bias=_arr(f, f"{mw}/dense_1/dense_1/bias:0", path),
            recurrent_activation=lstm_cfg.get("recurrent_activation", "hard_sigmoid"),
            activation=lstm_cfg.get("activation", "tanh"),
        )


def load_keras3_weights_h5(path: str | Path, recurrent_activation: str = "sigmoid") -> BiLSTMWeights:
    """A Keras 3 ``.weights.h5`` (toxic-comment-classifier): ``layers/<name>/vars/<i>``, no config inside,
    so the activation comes from the architecture code (Keras 3 LSTM default: sigmoid)."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        def lstm(direction: str) -> KerasLSTMWeights:
            p = f"layers/bidirectional/{direction}_layer/cell/vars"
            return KerasLSTMWeights(_arr(f, f"{p}/0", path), _arr(f, f"{p}/1", path), _arr(f, f"{p}/2", path))

        return BiLSTMWeights(
            embeddings=_arr(f, "layers/embedding/vars/0", path),
            forward=lstm("forward"),
            backward=lstm("backward"),
            dense_kernel=_arr(f, "layers/dense/vars/0", path),
            dense_bias=_arr(f, "layers/dense/vars/1", path),
            out_kernel=_arr(f, "layers/dense_1/vars/0", path),
            out_bias=_arr(f, "layers/dense_1/vars/1", path),
            recurrent_activation=recurrent_activation,
        )
