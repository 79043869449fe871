"""Temperature, top-k and top-p on logits -> the LM's sampling distribution before rectification.

Done here (not by ``generate()``'s warpers) so the caps are applied to the final distribution: the
projection must come last, otherwise a later truncation would renormalise and break the caps.
"""

from __future__ import annotations

import torch


def warp_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Return logits with temperature applied and truncated tokens set to ``-inf`` (last dim = vocab).

    ``top_k = 0`` and ``top_p = 1`` disable truncation. Ties at the k-th logit are all kept (as in
    transformers); top-p keeps the smallest most-likely set whose mass reaches ``top_p`` (at least one token).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy decoding instead)")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    out = logits.float() / temperature if temperature != 1.0 else logits.float()
    neg_inf = torch.tensor(float("-inf"), dtype=out.dtype, device=out.device)
    if 0 < top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = torch.where(out < kth, neg_inf, out)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = torch.where(drop, neg_inf, out)
    return out
