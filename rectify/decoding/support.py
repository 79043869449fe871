"""Sparse support: evaluate Q_D's vocabulary head only on the tokens the LM can actually sample.

With top-k or top-p the warped distribution is zero outside a few hundred tokens, and the KL projection
gives every zero-probability token zero mass (unless the kept tokens' caps sum to less than one: those rows
are redone on the full head by the caller). So Q is only needed on the support: gathering those output rows
of the Q head replaces a ``[B, H'] x [H', V]`` product by ``[B, K, H']`` dot products. Exact.

``support_mass = 1 - delta < 1`` (pure sampling) keeps only the smallest most-likely set ``S`` with mass
``m >= 1 - delta``: tokens in ``S`` are rectified (``p'(a) = min(c(a), lambda p(a))``, summing to ``m``) and
the rest keep the LM's own probabilities, unrectified. This is an *approximation*: each step samples an
unrectified token with probability ``1 - m <= delta``, so over ``T`` steps at most ``T * delta`` (union bound;
``support_mass=0.99`` and 20 tokens: <= 0.2 in the worst case, usually far less since those tokens are
rarely risky). The sampler counts those steps (``stats["unrectified_steps"]``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SEARCH = 256  # tokens looked at first when finding the smallest set holding support_mass


class Support(NamedTuple):
    """Per row: the kept token ids ``[B, K]`` (padded) and which of them are real."""

    index: torch.Tensor
    valid: torch.Tensor


def _top(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.topk(probs, min(k, probs.shape[-1]), dim=-1)


def support_of(probs: torch.Tensor, mass: float = 1.0) -> Support:
    """Tokens with positive probability (``mass = 1``), or the smallest set whose mass reaches ``mass``."""
    if mass >= 1.0:
        k = int((probs > 0).sum(-1).max())
        values, index = _top(probs, k)
        return Support(index, values > 0)
    k = SEARCH
    while True:
        values, index = _top(probs, k)
        before = torch.cumsum(values, -1) - values  # mass of the tokens ahead of each one
        reached = (before[:, -1] + values[:, -1]) >= mass
        if bool(reached.all()) or k >= probs.shape[-1]:
            break
        k *= 4
    keep = (before < mass) & (values > 0)
    width = int(keep.sum(-1).max())
    return Support(index[:, :width], keep[:, :width])


def scatter_support(base: torch.Tensor, support: Support, values: torch.Tensor) -> torch.Tensor:
    """``base`` with the support's entries replaced by ``values`` (padding entries left alone)."""
    safe = torch.where(support.valid, values, torch.gather(base, -1, support.index))
    return base.scatter(-1, support.index, safe)
