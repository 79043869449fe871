"""Decoding hyperparameters in one dataclass (mirrors ``configs/decoding/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rectify.config_utils import config_values
from rectify.decoding.caps import CapConfig


@dataclass
class DecodingConfig:
    """How to sample: LM warping, the security condition and how Q_D is evaluated.

    ``q_cache``: Q_D keeps a KV cache and sees one new token per step (``False`` re-runs it over the whole
    prefix every step, the original algorithm, kept for comparison). ``shared_backbone``: ``"auto"`` uses
    one forward per step when Q_D's backbone *is* the generator object; ``True`` insists on it. ``share_lower``:
    ``"auto"`` runs only Q_D's trained top blocks on the generator's hidden state when Q_D's frozen lower blocks
    are the generator's (checked to be exact, ``rectify/decoding/shared_lower.py``); ``True`` insists on it.
    """

    rectify: bool = True
    epsilon: float = 0.1
    p_min: float = 1e-5
    p_max: float = 1.0
    cap_mode: str = "original"
    q_scale: float = 1.0
    q_baseline: str = "zero"  # zero | policy
    tilt: float = 0.0  # p(a) (1 + Q)^tilt before the caps: 1 = the LM conditioned on a clean ending; 0 = off
    stop_neutral: bool = True  # the tilt keeps the LM's probability of stopping (EOS); see rectify/decoding/caps.py
    q_head: str = "online"  # online | target
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 20
    min_new_tokens: int = 0
    num_return_sequences: int = 1
    q_cache: bool = True
    shared_backbone: Any = "auto"  # "auto" | True | False
    share_lower: Any = "auto"  # "auto" | True | False: Q_D's frozen lower blocks read from the generator's forward
    dtype: str = "float32"  # Q_D's weights: auto | float32 | bfloat16 (lm.dtype is the generator's); math stays fp32
    sparse_support: bool = True  # with top-k / top-p: Q_D's vocabulary head only on the kept tokens (exact)
    support_mass: float = 1.0  # < 1: Q only on the smallest set holding this mass; the rest unrectified (approx.)
    calibration: Any = "auto"  # apply the Q_D's calibration.json: "auto" (when it has one) | True (required) | False

    def __post_init__(self) -> None:
        if self.q_head not in ("online", "target"):
            raise ValueError(f"q_head must be 'online' or 'target', got {self.q_head!r}")
        if self.max_new_tokens < 0 or not 0 <= self.min_new_tokens <= max(self.max_new_tokens, 0):
            raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens, got {self.min_new_tokens}, "
                             f"{self.max_new_tokens}")
        if self.num_return_sequences < 1:
            raise ValueError("num_return_sequences must be >= 1")
        if self.shared_backbone not in ("auto", True, False):
            raise ValueError(f"shared_backbone must be 'auto', true or false, got {self.shared_backbone!r}")
        if self.share_lower not in ("auto", True, False):
            raise ValueError(f"share_lower must be 'auto', true or false, got {self.share_lower!r}")
        if self.calibration not in ("auto", True, False):
            raise ValueError(f"calibration must be 'auto', true or false, got {self.calibration!r}")
        if not 0.0 < self.support_mass <= 1.0:
            raise ValueError(f"support_mass must be in (0, 1], got {self.support_mass}")
        self.caps  # validates epsilon / p_min / p_max / mode  # noqa: B018

    @property
    def caps(self) -> CapConfig:
        return CapConfig(epsilon=self.epsilon, p_min=self.p_min, p_max=self.p_max, mode=self.cap_mode,
                         q_scale=self.q_scale, q_baseline=self.q_baseline, tilt=self.tilt,
                         stop_neutral=self.stop_neutral)

    @classmethod
    def from_any(cls, cfg: Any = None, **overrides: Any) -> DecodingConfig:
        """Accept a DecodingConfig, dict or OmegaConf node; unknown keys are an error."""
        return cls(**config_values(cls, cfg, "decoding", **overrides))
