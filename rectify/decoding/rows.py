"""The row-level pieces of a decoding step, shared by the local sampler, the remote generator and the server.

Encoding and left padding, per-row seeded generators, the rectified distribution (clean-ending reweighting ->
caps -> KL projection) and the inverse-CDF draw on one float64 uniform per row: one implementation, so with a
full support the remote generator draws the tokens the local sampler draws for the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rectify.decoding.caps import CapConfig
from rectify.decoding.config import DecodingConfig
from rectify.decoding.projection import Projection, project
from rectify.decoding.warping import warp_logits


def row_seed(seed: int, sample: int) -> int:
    """Seed of sample ``j`` of a prompt whose seed is ``seed`` (stable, so resumed runs repeat)."""
    return (int(seed) * 1_000_003 + int(sample)) % (2**63 - 1)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of a prompt (its first ``max_tokens``); an empty prompt becomes BOS, else EOS."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])[:max_tokens] or [start]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of left-padded rows (the mask marks real tokens)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def row_generators(seeds: Sequence[int], k: int, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per row, prompt-major, seeded as the local sampler seeds them (``row_seed``)."""
    return [torch.Generator(device=device).manual_seed(row_seed(s, j)) for s in seeds for j in range(k)]


def distribution(logits: torch.Tensor, q: torch.Tensor | None, cfg: DecodingConfig,
                 stop_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, Projection | None]:
    """The distribution to sample from: warped LM probabilities, projected under Q_D's caps when ``q``."""
    temperature = cfg.temperature if cfg.do_sample else 1.0
    warped = warp_logits(logits, temperature, cfg.top_k, cfg.top_p)
    probs = torch.softmax(warped, -1)
    if q is None:
        return probs, None
    proj = rectify_probs(probs, q, cfg.caps, fallback=lambda: torch.softmax(logits.float() / temperature, -1),
                         stop_ids=stop_ids)
    return proj.probs, proj


def stop_mask(stop_ids: torch.Tensor | None, vocab: int, device: torch.device | str) -> torch.Tensor | None:
    """``[V]`` bool mask of the stop (EOS) token ids (those past ``vocab`` ignored), or None."""
    if stop_ids is None:
        return None
    ids = torch.as_tensor(stop_ids, dtype=torch.long).flatten()
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    mask[ids[ids < vocab].to(device)] = True
    return mask


def stop_ids_of(value_model: Any, eos_token_id: int | Sequence[int] | None = None) -> torch.Tensor | None:
    """The stop ids a stop-neutral tilt leaves alone: ``eos_token_id``, else Q_D's tokenizer's EOS (None if neither)."""
    if eos_token_id is None:
        eos_token_id = getattr(getattr(value_model, "tokenizer", None), "eos_token_id", None)
    if eos_token_id is None:
        return None
    return torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), dtype=torch.long)


def rectify_probs(probs: torch.Tensor, q: torch.Tensor, rule: CapConfig,
                  fallback: Callable[[], torch.Tensor] | None = None,
                  stop_ids: torch.Tensor | None = None) -> Projection:
    """``probs`` reweighted toward clean endings, capped by Q (``[N, >= V]``, cut to the vocabulary) and
    KL-projected onto the caps; ``fallback`` gives the distribution to follow when only dead ends are left;
    ``stop_ids``: the EOS ids, whose probability a ``stop_neutral`` rule's tilt leaves as it is."""
    q = q[:, : probs.shape[-1]].to(probs.device)
    stop = stop_mask(stop_ids, probs.shape[-1], probs.device) if rule.needs_stop else None
    probs = rule.reweight(q, probs, stop=stop)
    return project(probs, rule.compute(q, probs), fallback=fallback)


CDF_BLOCK = 256  # tokens per block of the two-level inverse-CDF search in :func:`inverse_cdf`


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Index of the first token whose running float64 sum exceeds ``u * total`` (``u`` ``[N, 1]`` in [0, 1)).

    Two levels, so no float64 copy or running sum of the whole ``[N, V]`` tensor is built (that was most of
    a data-build step's time): block sums in one pass (in the input's dtype, accumulated across blocks in
    float64), the block holding the target, then the float64 running sum inside that block only. The same
    draw as a full float64 cumsum except when ``u`` falls within the block sums' rounding (about 1e-7 of a
    block's mass for float32) of a token boundary; a token with zero probability is never returned while
    the row has mass.
    """
    n, v = probs.shape
    nb = v // CDF_BLOCK
    sums = probs[:, : nb * CDF_BLOCK].reshape(n, nb, CDF_BLOCK).sum(-1)  # a float64 sum would copy the tensor
    if nb * CDF_BLOCK < v:
        sums = torch.cat([sums, probs[:, nb * CDF_BLOCK:].sum(-1, keepdim=True)], -1)
    cum = sums.double().cumsum(-1)
    total = cum[:, -1:]
    target = torch.minimum(u.to(cum) * total, torch.nextafter(total, torch.zeros_like(total)))
    block = torch.searchsorted(cum, target, right=True).clamp_max(cum.shape[-1] - 1)  # cum[b-1] <= target < cum[b]
    before = torch.where(block > 0, cum.gather(-1, (block - 1).clamp_min(0)), 0.0)
    cols = block * CDF_BLOCK + torch.arange(CDF_BLOCK, device=probs.device)
    inside = cols < v
    vals = torch.where(inside, probs.gather(-1, cols.clamp_max(v - 1)).double(), 0.0)
    j = torch.searchsorted(before + vals.cumsum(-1), target, right=True)
    # Rounding can put the in-block sum just short of the target: take the block's last token with mass.
    last = torch.where(vals > 0, torch.arange(CDF_BLOCK, device=probs.device), 0).amax(-1, keepdim=True)
    return (block * CDF_BLOCK + torch.minimum(j, last)).squeeze(-1)


def draw(probs: torch.Tensor, gens: Sequence[torch.Generator | None] | None,
         greedy: torch.Tensor | bool = False) -> torch.Tensor:
    """Sample one token per row by inverse CDF on one float64 uniform (from the row's generator, if any)."""
    n = probs.shape[0]
    us = [torch.rand(1, generator=g, dtype=torch.float64, device=g.device) if g is not None else
          torch.rand(1, dtype=torch.float64) for g in (gens if gens is not None else [None] * n)]
    u = torch.cat([x.to(probs.device) for x in us]).unsqueeze(-1)
    idx = inverse_cdf(probs, u)
    greedy_t = torch.as_tensor(greedy, device=probs.device).expand(n)
    if not bool(greedy_t.any()):  # the argmax over the vocabulary is paid only when a row asks for it
        return idx
    return torch.where(greedy_t, probs.argmax(-1), idx)
