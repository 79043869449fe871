"""KL projection of a next-token distribution onto per-token probability caps (the security condition).

The rectified policy must satisfy ``p'(a) <= c(a)`` for every token. Among all such distributions the one
closest to the LM's ``p`` in ``KL(p' || p)`` is ``p'(a) = min(c(a), lambda * p(a))`` with ``lambda >= 1``
chosen so that ``p'`` sums to one (water-filling: capped tokens sit at their cap, the others keep their
relative odds). ``lambda`` is found exactly by sorting tokens on ``c / p``; the sum
``f(lambda) = sum_a min(c(a), lambda p(a))`` is piecewise linear between consecutive ratios, so one
cumulative sum gives every breakpoint and the right segment is solved in closed form.

Two degenerate cases, both reported per row so callers can count them:

* ``dead_end``: ``sum(c) < 1``. No distribution satisfies the caps; the result is ``c / sum(c)`` (every
  token is a dead end, so sample in proportion to the caps, as the method prescribes).
* ``outside_support``: ``sum(c) >= 1`` but the caps of the tokens with ``p > 0`` sum to less than one
  (e.g. top-k kept only dead ends). No feasible point has finite KL to ``p``. Each supported token gets
  its full cap and the remaining mass ``R`` goes to the zero-probability tokens by the same water-filling
  on a fallback distribution ``q`` (``min(c, mu * q)`` summing to ``R``): by default ``q`` is proportional
  to the caps themselves (then simply ``R * c / sum(c)`` over those tokens, which never exceeds a cap);
  the decoding loop passes the LM's untruncated distribution so the extra mass follows the LM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

TINY = 1e-200
TINY32 = 1e-30
CANDIDATES = 256  # tokens sorted per row before falling back to a full sort


class Projection(NamedTuple):
    """Projected probabilities plus per-row flags of the two fallbacks (shape: leading dims of the input)."""

    probs: torch.Tensor
    dead_end: torch.Tensor
    outside_support: torch.Tensor


def _solve(ratio: torch.Tensor, w: torch.Tensor, c: torch.Tensor, tail: torch.Tensor,
           mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda from tokens sorted by ascending ``ratio = c / w``; ``tail`` = weight of tokens never capped.

    ``f(lambda) = sum min(c, lambda w)`` is linear between breakpoints; with tokens ``0..i`` capped at
    breakpoint ``r_i`` it equals ``C_i + r_i * W_{>i}``. The number ``k`` of breakpoints still below
    ``mass`` is the number of capped tokens, and ``lambda = (mass - C_{<k}) / W_{>=k}``.
    Returns ``(lambda, ok)``; ``ok`` is false where no uncapped weight is left.
    """
    finite = torch.isfinite(ratio)
    cum_c = torch.cumsum(torch.where(finite, c, 0.0), -1)
    # Suffix sums summed from the small end: no cancellation when lambda is huge and weights tiny.
    suffix = torch.flip(torch.cumsum(torch.flip(w, [-1]), -1), [-1]) + tail  # W_{>=i}
    suffix_ext = torch.cat([suffix, tail], -1)
    f_at = torch.where(finite, cum_c + torch.where(finite, ratio, 0.0) * suffix_ext[..., 1:], torch.inf)
    k = (f_at < mass).sum(-1, keepdim=True)
    c_before = torch.where(k > 0, torch.gather(cum_c, -1, (k - 1).clamp_min(0)), torch.zeros_like(mass))
    w_free = torch.gather(suffix_ext, -1, k)
    ok = w_free > 0
    return (mass - c_before) / torch.where(ok, w_free, 1.0), ok


def _waterfill(weights: torch.Tensor, caps: torch.Tensor, mass: torch.Tensor,
               candidates: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``sum_a min(c(a), lam * w(a)) = mass`` for ``lam`` per row (last dim = vocabulary).

    Returns ``(min(c, lam * w), short)`` where ``short`` marks rows in which even capping every token with
    ``w > 0`` at its cap cannot reach ``mass``; those rows come back as ``c`` on the support of ``w``.
    Usually few tokens are capped, so only the ``candidates`` smallest ratios are sorted (``topk``; default
    ``None`` picks a size from the tokens surely capped, 0 forces a full sort); the answer is exact whenever
    lambda stays below the first ratio left out, and rows where it does not are solved again by a full sort.
    """
    # Weights below 1e-200 (float32: 1e-30) of the largest count as zero: their cap ratio would overflow.
    scale = weights.amax(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    weights = weights / scale
    weights = torch.where(weights < _tiny(weights.dtype), 0.0, weights)
    support = weights > 0
    caps_s = torch.where(support, caps, 0.0)
    short = caps_s.sum(-1, keepdim=True) < mass
    # Ratio at which a token hits its cap; tokens outside the support never do.
    ratio = torch.where(support, caps / torch.where(support, weights, 1.0), torch.inf)
    vocab = ratio.shape[-1]
    lam = ok = None
    if candidates is None:
        # lambda >= mass / sum(w), so every token with a smaller ratio is capped: make room for all of
        # them and as many again (correctness never depends on this guess, only speed).
        low = mass / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
        violators = int((ratio < low).sum(-1).max())
        candidates = max(CANDIDATES, 2 * violators + 16)
        candidates = candidates if candidates < vocab // 2 else 0
    if 0 < candidates < vocab:
        neg, idx = torch.topk(-ratio, candidates + 1, dim=-1)  # the smallest ratios, ascending
        cand = idx[..., :candidates]
        tail = weights.scatter(-1, cand, 0.0).sum(-1, keepdim=True)
        lam, ok = _solve(-neg[..., :candidates], torch.gather(weights, -1, cand), torch.gather(caps_s, -1, cand),
                         tail, mass)
        ok = short | (ok & (lam <= -neg[..., candidates:]))
    if ok is None or not bool(ok.all()):
        r_sorted, order = torch.sort(ratio, dim=-1)
        lam_full, _ = _solve(r_sorted, torch.gather(weights, -1, order), torch.gather(caps_s, -1, order),
                             torch.zeros_like(mass), mass)
        lam = lam_full if ok is None else torch.where(ok, lam, lam_full)
    out = torch.minimum(caps, lam * weights)
    out = torch.where(short, caps_s, out)
    return out, short.squeeze(-1)


def _tiny(dtype: torch.dtype) -> float:
    return TINY if dtype == torch.float64 else TINY32


def project(probs: torch.Tensor, caps: torch.Tensor,
            fallback: torch.Tensor | Callable[[], torch.Tensor] | None = None,
            candidates: int | None = None) -> Projection:
    """KL-project ``probs`` onto ``{p' : p' <= caps, sum p' = 1}`` over the last dim (see module doc).

    ``probs`` rows must sum to one (non-negative); ``caps`` broadcast to ``probs``. ``fallback`` (same shape,
    optional; or a callable giving it, evaluated only when needed) sets how mass is spread over
    zero-probability tokens when the support's caps fall short.
    Computed and returned in float64 for float64 input, otherwise in float32: a bf16 / fp16 input comes back
    in float32, because rounding the result to 8 mantissa bits could lift a capped token above its cap.
    """
    if probs.shape[-1] == 0:
        raise ValueError("project: empty last dimension")
    work = torch.float64 if probs.dtype == torch.float64 else torch.float32
    tiny = torch.finfo(work).tiny
    p = probs.to(work).clamp_min(0.0)
    c = torch.broadcast_to(caps.to(device=p.device, dtype=work), p.shape).clamp_min(0.0)
    total_p = p.sum(-1, keepdim=True)
    total_c = c.sum(-1, keepdim=True)
    if bool(torch.isnan(total_p).any() | torch.isnan(total_c).any()):
        raise ValueError("project: NaN in probs or caps")
    p = p / total_p.clamp_min(tiny)
    p = torch.where(p < _tiny(work), 0.0, p)
    dead_end = (total_c < 1.0).squeeze(-1)
    need = (p > c).any(-1) | dead_end
    if not bool(need.any()):
        return Projection(p, dead_end, torch.zeros_like(dead_end))  # caps already hold: lambda = 1 everywhere
    if bool(need.all()):
        result, outside = _project_rows(p, c, total_c, dead_end, fallback, candidates)
        return Projection(result, dead_end, outside)
    # Only the rows whose caps bind are solved (a few of a large batch, usually): the others keep p exactly.
    vocab = p.shape[-1]
    rows = need.reshape(-1).nonzero().squeeze(-1)
    p2, c2 = p.reshape(-1, vocab), c.reshape(-1, vocab)

    def rows_fallback() -> torch.Tensor:
        full = fallback() if callable(fallback) else fallback
        return torch.broadcast_to(full.to(p.device), p.shape).reshape(-1, vocab)[rows]

    sub, sub_outside = _project_rows(p2[rows], c2[rows], total_c.reshape(-1, 1)[rows], dead_end.reshape(-1)[rows],
                                     None if fallback is None else rows_fallback, candidates)
    result = p2.index_copy(0, rows, sub).view(p.shape)
    outside = torch.zeros_like(need).reshape(-1).index_copy(0, rows, sub_outside).view(need.shape)
    return Projection(result, dead_end, outside)


def _project_rows(p: torch.Tensor, c: torch.Tensor, total_c: torch.Tensor, dead_end: torch.Tensor,
                  fallback: torch.Tensor | Callable[[], torch.Tensor] | None,
                  candidates: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project` on rows where some cap binds (or every one is a dead end): ``(probs, outside_support)``."""
    tiny = torch.finfo(p.dtype).tiny
    one = torch.ones_like(total_c)
    main, short = _waterfill(p, c, one, candidates)
    outside = short & ~dead_end
    result = main
    if bool(outside.any()):
        # Remaining mass goes to zero-probability tokens, water-filled on the fallback distribution.
        remainder = (one - main.sum(-1, keepdim=True)).clamp_min(0.0)
        zero_p = p <= 0
        c_zero = torch.where(zero_p, c, 0.0)
        if callable(fallback):
            fallback = fallback()
        q = c if fallback is None else fallback.to(device=p.device, dtype=p.dtype).clamp_min(0.0)
        extra, extra_short = _waterfill(torch.where(zero_p, q, 0.0), c_zero, remainder, candidates)
        if fallback is not None and bool((extra_short & outside).any()):
            by_caps, _ = _waterfill(c_zero, c_zero, remainder, candidates)
            extra = torch.where(extra_short.unsqueeze(-1), by_caps, extra)
        result = torch.where(outside.unsqueeze(-1), main + extra, result)
    if bool(dead_end.any()):
        result = torch.where(dead_end.unsqueeze(-1), c / total_c.clamp_min(tiny), result)
    return result, outside


def project_to_caps(probs: torch.Tensor, caps: torch.Tensor) -> torch.Tensor:
    """The projected distribution only (see :func:`project` for the fallback flags)."""
    return project(probs, caps).probs
