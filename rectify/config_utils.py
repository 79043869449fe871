"""Turn Hydra/OmegaConf nodes, dicts or dataclass instances into checked dataclass field values.

Every typed config (LM, value model, decoding) accepts the same three inputs and must reject misspelt
keys loudly instead of silently ignoring them; this is that rule, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any


def config_values(cls: type, cfg: Any, what: str, error: type[Exception] = ValueError,
                  **overrides: Any) -> dict[str, Any]:
    """Field values for dataclass ``cls`` from ``cfg`` (None, instance, mapping or OmegaConf node)."""
    if cfg is None:
        values: dict[str, Any] = {}
    elif is_dataclass(cfg) and not isinstance(cfg, type):
        values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    else:
        if not isinstance(cfg, Mapping):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        values = {k: v for k, v in cfg.items() if k != "_target_"}
    values |= overrides
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise error(f"unknown {what} config keys {sorted(unknown)}; known: {sorted(known)}")
    return values
