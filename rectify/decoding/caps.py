"""Per-token probability caps from Q_D (the security condition of rectification).

``-Q_D(s, a)`` estimates the chance that token ``a`` leads to a toxic ending, so the policy may give ``a``
at most ``1 + Q_D(s, a) - epsilon``:

* ``mode="original"`` (the paper's code, and what this project's experiments use):
  ``clamp(1 + Q - epsilon, p_min, p_max)``.
* ``mode="normalized"``: ``clamp((1 + Q - epsilon) / (1 - epsilon), p_min, p_max)`` — rescales so a token
  with ``Q = 0`` keeps cap 1 whatever epsilon; only tokens with some estimated risk are limited.

``p_min > 0`` keeps every token reachable (caps in ``(0, 1]``) so the projection always has a
finite-KL answer unless every token is a dead end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CAP_MODES = ("original", "normalized")


@dataclass
class CapConfig:
    """Hyperparameters of the security condition (mirrors ``configs/decoding/rectified.yaml``)."""

    epsilon: float = 0.1
    p_min: float = 1e-5
    p_max: float = 1.0
    mode: str = "original"

    def __post_init__(self) -> None:
        if self.mode not in CAP_MODES:
            raise ValueError(f"cap mode {self.mode!r}; use one of {CAP_MODES}")
        if not 0.0 <= self.p_min <= self.p_max <= 1.0:
            raise ValueError(f"need 0 <= p_min <= p_max <= 1, got p_min={self.p_min}, p_max={self.p_max}")
        if self.mode == "normalized" and not self.epsilon < 1.0:
            raise ValueError("mode='normalized' needs epsilon < 1")


def caps_from_q(
    q: torch.Tensor, epsilon: float, p_min: float = 1e-5, p_max: float = 1.0, mode: str = "original"
) -> torch.Tensor:
    """Caps for every token from Q values in [-1, 0] (any shape; computed in float32 or wider)."""
    cfg = CapConfig(epsilon=epsilon, p_min=p_min, p_max=p_max, mode=mode)
    q = q.float() if q.dtype in (torch.float16, torch.bfloat16) else q
    caps = 1.0 + q - cfg.epsilon
    if cfg.mode == "normalized":
        caps = caps / (1.0 - cfg.epsilon)
    return caps.clamp(cfg.p_min, cfg.p_max)
