"""Calibrate Q_D so that ``-Q(s, a)`` is the probability of a toxic ending, as the paper's cap assumes.

The security condition ``p(a) <= 1 + Q(s, a) - epsilon`` reads Q as ``-P(dead end | s, a)``. A Q_D trained
by regression on data with few dead ends predicts values compressed toward 0 (the README's *Results*), so
the raw rule hardly bites. Instead of a hand-tuned ``q_scale``, we fit a monotone map from raw Q to the
observed outcome on the *validation* split of the value data: every continuation step ``(s_t, a_t)`` of a
validation trajectory is one pair ``(Q(s_t, a_t), toxic ending?)`` and isotonic regression (non-decreasing
in Q, bounded to [-1, 0]) gives the calibrated ``Q' = -P(toxic | Q)``. The map is saved beside the Q_D
(``calibration.json``) and applied inside :meth:`ValueModel.q_values` when loaded, so every consumer
(sampler, logits processor, estimators, remote generator, server) sees the same calibrated values.

A monotone map keeps Q_D's ranking (AUC) unchanged; it only moves the values to the probability scale.
Caveat: the probabilities are those of the value data's prompt mix (toxic prompts are over-represented
there), so they are upper bounds of the risk after an ordinary prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

CALIBRATION_FILE = "calibration.json"


@dataclass
class QCalibration:
    """A non-decreasing piecewise-linear map raw Q -> calibrated Q, flat outside its knots."""

    x: list[float]  # raw Q knots, increasing
    y: list[float]  # calibrated Q at the knots, non-decreasing, in [-1, 0]
    method: str = "isotonic"
    stats: dict[str, Any] = field(default_factory=dict)
    # the knots as tensors per (device, dtype): built once, not at every decoding step
    _knots: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    # the map at all 65536 values of a 16-bit dtype, per (device, dtype)
    _tables: dict[tuple[Any, Any], torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError(f"calibration needs as many x as y knots (>= 1), got {len(self.x)} and {len(self.y)}")
        if any(b < a for a, b in zip(self.x, self.x[1:], strict=False)):
            raise ValueError("calibration x knots must be non-decreasing")
        if any(b < a - 1e-9 for a, b in zip(self.y, self.y[1:], strict=False)):
            raise ValueError("calibration y knots must be non-decreasing (the map must keep Q_D's order)")

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """Apply the map elementwise (float32 or wider, any shape, any device).

        A 16-bit ``q`` (a bf16 / fp16 Q_D's head) takes one of only 65536 values: it is looked up in a table
        of the map at every one of them, the same float32 numbers :meth:`interpolate` gives, in one gather
        instead of a search and a dozen passes over a ``[rows, vocabulary]`` tensor each decoding step.
        """
        if q.dtype in (torch.bfloat16, torch.float16):
            key = (q.device, q.dtype)
            if key not in self._tables:
                every = torch.arange(-(2**15), 2**15, dtype=torch.int32, device=q.device).to(torch.int16)
                self._tables[key] = self.interpolate(every.view(q.dtype))
            bits = q.contiguous().view(torch.int16).to(torch.int32) + 2**15
            return self._tables[key].index_select(0, bits.reshape(-1)).view(q.shape)
        return self.interpolate(q)

    def interpolate(self, q: torch.Tensor) -> torch.Tensor:
        """The map by search and linear interpolation between the knots (float32 or wider)."""
        dtype = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
        key = (q.device, dtype)
        if key not in self._knots:
            self._knots[key] = (torch.tensor(self.x, dtype=dtype, device=q.device),
                                torch.tensor(self.y, dtype=dtype, device=q.device))
        xs, ys = self._knots[key]
        v = q.to(dtype)
        if len(self.x) == 1:
            return ys.expand_as(v).clone()
        i = torch.searchsorted(xs, v.contiguous(), right=True).clamp(1, len(self.x) - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        gap = x1 - x0
        w = torch.where(gap > 0, (v - x0) / torch.where(gap > 0, gap, torch.ones_like(gap)), (v >= x1).to(dtype))
        w = w.clamp(0.0, 1.0)
        return y0 + w * (y1 - y0)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> QCalibration | None:
        """The calibration saved in a Q_D dir, or None when it has none."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid Q_D calibration ({exc})") from exc


def fit_isotonic(q: np.ndarray, toxic: np.ndarray, max_knots: int = 200) -> QCalibration:
    """Isotonic fit of ``-toxic`` on raw Q (non-decreasing, in [-1, 0]); knots thinned to ``max_knots``."""
    from sklearn.isotonic import IsotonicRegression

    q = np.asarray(q, dtype=np.float64)
    y = -np.asarray(toxic, dtype=np.float64)
    if q.shape != y.shape or q.size == 0:
        raise ValueError(f"need equal, non-empty arrays of Q values and outcomes, got {q.shape} and {y.shape}")
    iso = IsotonicRegression(y_min=-1.0, y_max=0.0, increasing=True, out_of_bounds="clip").fit(q, y)
    xs, ys = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
    if len(xs) > max_knots:  # keep the shape, drop redundant knots (ends always kept)
        keep = np.unique(np.linspace(0, len(xs) - 1, max_knots).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    pred = iso.predict(q)
    stats = {
        "pairs": int(q.size),
        "toxic_share": float(-y.mean()),
        "brier_raw": float(np.mean((q - y) ** 2)),
        "brier_calibrated": float(np.mean((pred - y) ** 2)),
        "mean_q_raw": float(q.mean()),
        "mean_q_calibrated": float(pred.mean()),
    }
    return QCalibration(x=[float(v) for v in xs], y=[float(v) for v in ys], method="isotonic", stats=stats)


@torch.inference_mode()
def step_values(model: Any, batches: Iterable[dict[str, Any]], threshold: float = -0.5,
                target: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(Q(s_t, a_t), toxic ending)`` for every continuation step of every trajectory in ``batches``.

    ``batches`` are :class:`rectify.training.data.ValueCollator` batches; a trajectory is toxic when its
    terminal reward is below ``threshold`` (the training module's rule). Raw Q: any calibration attached
    to ``model`` is bypassed.
    """
    from rectify.td import prompt_mask

    device = next(model.parameters()).device
    saved, model.q_transform = getattr(model, "q_transform", None), None
    qs, ys = [], []
    try:
        for batch in batches:
            ids = batch["input_ids"].to(device)
            mask = batch["attention_mask"].to(device)
            hidden, _ = model.hidden_states(ids, mask)
            q = model.q_taken(hidden[:, :-1], ids[:, 1:], target=target).float()
            valid = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
            if batch.get("prompt_len") is not None:
                cont = valid & prompt_mask(mask, batch["prompt_len"].to(device))
                valid = torch.where(cont.any(-1, keepdim=True), cont, valid)
            toxic = (batch["reward"].to(device) < threshold).float().unsqueeze(-1).expand_as(q)
            qs.append(q[valid].cpu().numpy())
            ys.append(toxic[valid].cpu().numpy())
    finally:
        model.q_transform = saved
    return np.concatenate(qs), np.concatenate(ys)


def calibrate(model: Any, batches: Iterable[dict[str, Any]], threshold: float = -0.5,
              max_knots: int = 200) -> QCalibration:
    """Fit the calibration of ``model`` on ``batches`` (the validation split of its value data)."""
    q, toxic = step_values(model, batches, threshold)
    if not (0 < toxic.sum() < toxic.size):
        raise ValueError("calibration needs both toxic and clean trajectories in the validation data")
    return fit_isotonic(q, toxic, max_knots)
