"""Generate for a batch of rows that each carry their own sampling settings (rows of different requests).

Rows are grouped by ``(temperature, top_k, top_p, rectify, epsilon)`` for the distribution step; the
forward passes (generator and Q_D, both with KV caches, left padding with correct positions) are shared by
the whole batch. Each row's distribution is built exactly as in the local sampler and the log-probabilities
returned are those of the distribution the token was drawn from (after rectification when it is on).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rectify.decoding.config import DecodingConfig
from rectify.decoding.forward import lm_step, q_step
from rectify.decoding.rows import distribution, draw, left_pad
from rectify.decoding.sampler import RectifiedSampler
from rectify.lm import position_ids_from_mask


@dataclass
class RowSpec:
    """One sequence to generate: prompt ids plus the request's settings (``temperature=0``: greedy)."""

    prompt_ids: list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    rectify: bool = False
    epsilon: float = 0.1
    seed: int | None = None  # the row's own seed (None: the process RNG)
    logprobs: int | None = None  # top-K logprobs per step (0: only the sampled token's)
    on_token: Callable[[int, RowOutput], None] | None = None  # after each step (streaming)


@dataclass
class RowOutput:
    tokens: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS) | "length"
    dead_ends: int = 0
    outside_support: int = 0


class Engine:
    """The models of a :class:`RectifiedSampler` (generator, tokenizer, optional Q_D, EOS ids) run per row."""

    def __init__(self, sampler: RectifiedSampler, base: DecodingConfig | Any = None):
        self.sampler = sampler
        self.base = DecodingConfig.from_any(base if base is not None else sampler.cfg)
        self.tokenizer = sampler.tokenizer
        self.vocab_size = sampler.vocab_size
        cfg = sampler.generator.config.get_text_config()
        self.max_positions = int(getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 1024))

    @property
    def can_rectify(self) -> bool:
        return self.sampler.value_model is not None

    def config_for(self, row: RowSpec) -> DecodingConfig:
        """The decoding settings of one row (raises ValueError on values the cap rule refuses)."""
        greedy = row.temperature == 0
        return dataclasses.replace(self.base, rectify=row.rectify, epsilon=row.epsilon, do_sample=not greedy,
                                   temperature=1.0 if greedy else row.temperature, top_k=row.top_k,
                                   top_p=row.top_p)

    def _distributions(self, logits: torch.Tensor, q: torch.Tensor | None, rows: list[RowSpec],
                       configs: list[DecodingConfig]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = torch.empty_like(logits)
        dead = torch.zeros(len(rows), dtype=torch.bool)
        outside = torch.zeros(len(rows), dtype=torch.bool)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault((c.temperature, c.top_k, c.top_p, c.rectify, c.epsilon), []).append(i)
        for members in groups.values():
            idx = torch.tensor(members)
            cfg = configs[members[0]]
            p, proj = distribution(logits[idx], q[idx] if cfg.rectify and q is not None else None, cfg,
                                   self.sampler.eos_ids)
            probs[idx] = p
            if proj is not None:
                dead[idx], outside[idx] = proj.dead_end.cpu(), proj.outside_support.cpu()
        return probs, dead, outside

    @torch.inference_mode()
    def run(self, rows: list[RowSpec], cancelled: Callable[[], Sequence[bool]] | None = None) -> list[RowOutput]:
        """Generate every row to EOS or its ``max_tokens``; outputs in the order of ``rows``.

        ``cancelled`` (asked before each step) flags rows nobody waits for any more (their client went away):
        they stop there, ``finish_reason`` None, and the batch ends once no live row is left, so an abandoned
        long request does not hold the worker. The other rows' tokens are unchanged.
        """
        s = self.sampler
        dev = s.device
        configs = [self.config_for(r) for r in rows]
        greedy = torch.tensor([not c.do_sample for c in configs], device=dev)
        gens = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in rows]
        ids, mask = left_pad([r.prompt_ids for r in rows], s.pad_id)
        ids, mask = ids.to(dev), mask.to(dev)
        pos = position_ids_from_mask(mask)
        vm = s.value_model if any(c.rectify for c in configs) else None
        logits, hidden, cache = lm_step(s.generator, ids, mask, pos)
        q = q_cache = None
        if vm is not None:
            q, q_cache = self._q(vm, hidden, ids, mask, pos, None)
        eos = s.eos_ids.to(dev)
        outs = [RowOutput() for _ in rows]
        limits = torch.tensor([r.max_tokens for r in rows], device=dev)
        finished = torch.zeros(len(rows), dtype=torch.bool, device=dev)
        for t in range(int(limits.max())):
            gone = list(cancelled()) if cancelled is not None else []
            if any(gone):
                finished = finished | torch.tensor(gone, dtype=torch.bool, device=dev)
                if bool(finished.all()):
                    break
            probs, dead, outside = self._distributions(logits[:, : self.vocab_size], q, rows, configs)
            token = draw(probs, gens, greedy)
            token = torch.where(finished, torch.full_like(token, s.pad_id), token)
            stop = torch.isin(token, eos)
            for i in (~finished).nonzero().squeeze(-1).tolist():
                self._record(outs[i], rows[i], probs[i], int(token[i]), bool(dead[i]), bool(outside[i]))
                if bool(stop[i]) or t + 1 >= rows[i].max_tokens:
                    outs[i].finish_reason = "stop" if bool(stop[i]) else "length"
                if rows[i].on_token is not None:
                    rows[i].on_token(t, outs[i])
            finished = finished | stop | (limits <= t + 1)
            if bool(finished.all()):
                break
            step = token.unsqueeze(-1)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], -1)
            pos = pos[:, -1:] + 1
            logits, hidden, cache = lm_step(s.generator, step, mask, pos, cache)
            if vm is not None:
                q, q_cache = self._q(vm, hidden, step, mask, pos, q_cache)
        return outs

    def _q(self, vm: Any, hidden: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
           cache: Any) -> tuple[torch.Tensor, Any]:
        target = self.base.q_head == "target"
        if self.sampler.shared:
            return vm.q_values(hidden, target=target).float(), None
        return q_step(vm, ids, mask, pos, cache, target=target)

    @staticmethod
    def _record(out: RowOutput, row: RowSpec, probs: torch.Tensor, token: int, dead: bool, outside: bool) -> None:
        out.tokens.append(token)
        out.dead_ends += dead
        out.outside_support += outside
        if row.logprobs is None:
            return
        p = probs.double()
        out.token_logprobs.append(float(torch.log(p[token])))
        if row.logprobs > 0:
            values, idx = torch.topk(p, min(row.logprobs, p.shape[-1]))
            keep = values > 0
            out.top_logprobs.append(list(zip(idx[keep].tolist(), torch.log(values[keep]).tolist(), strict=True)))
        else:
            out.top_logprobs.append([])
