"""Toxicity scorers behind one interface: ``build_scorer(cfg)(texts) -> np.ndarray`` of P(toxic) in [0, 1].

Names (also the Hydra group ``configs/scorer/``): jigsaw_lstm, jigsaw_lstm_tcc, profanity_svm, hatesonar,
insult_lr, wordlist, reward_model, hf_classifier (any Hub or local sequence classifier; ``configs/scorer/``
also holds presets of it for public toxicity classifiers), perspective, and ``ensemble`` (several of them
reduced by max or mean).
Implementations are imported lazily, so asking for one scorer never loads the others' heavy dependencies
(onnx, transformers).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from rectify.scoring.base import Scorer

# name -> "module:factory"
REGISTRY: dict[str, str] = {
    "jigsaw_lstm": "rectify.scoring.jigsaw_lstm:tox_block_scorer",
    "jigsaw_lstm_tcc": "rectify.scoring.jigsaw_lstm:toxic_comment_classifier_scorer",
    "profanity_svm": "rectify.scoring.profanity:ProfanitySVMScorer",
    "hatesonar": "rectify.scoring.hatesonar:HateSonarScorer",
    "insult_lr": "rectify.scoring.insult_lr:InsultLRScorer",
    "wordlist": "rectify.scoring.wordlist:WordListScorer",
    "reward_model": "rectify.scoring.reward_model:RewardModelScorer",
    "hf_classifier": "rectify.scoring.hf_classifier:HFClassifierScorer",
    "perspective": "rectify.scoring.perspective:PerspectiveScorer",
    "ensemble": "rectify.scoring.ensemble:EnsembleScorer",
}


def _factory(name: str):
    try:
        target = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; choose one of {sorted(REGISTRY)}") from None
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def build_scorer(cfg: str | Mapping[str, Any] | Scorer, **overrides: Any) -> Scorer:
    """A scorer from a name (``"hatesonar"``), a mapping with ``_target_`` (a ``configs/scorer/*.yaml``, also as
    OmegaConf) or with ``name`` plus keyword arguments; ``overrides`` are passed on as keyword arguments."""
    if isinstance(cfg, Scorer):
        return cfg
    if isinstance(cfg, str):
        return _factory(cfg)(**overrides)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if not isinstance(cfg, Mapping):
        raise TypeError(f"scorer config must be a name or a mapping, got {type(cfg).__name__}")
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name", "_partial_")}
    kwargs.update(overrides)
    if "_target_" in cfg:
        module, _, attr = str(cfg["_target_"]).rpartition(".")
        return getattr(importlib.import_module(module), attr)(**kwargs)
    if "name" in cfg:
        return _factory(str(cfg["name"]))(**kwargs)
    raise ValueError(f"scorer config needs '_target_' or 'name'; got keys {sorted(cfg)}")


__all__ = ["REGISTRY", "Scorer", "build_scorer"]
