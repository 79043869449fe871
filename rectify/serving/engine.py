"""Generate for a batch of rows that each carry their own sampling settings (rows of different requests).

Rows are grouped by ``(temperature, top_k, top_p, rectify, epsilon)`` for the distribution step; the
forward passes (generator and Q_D, both with KV caches, left padding with correct positions) are shared by
the rows still running: a row that finished (EOS or its ``max_tokens``) or was cancelled leaves the batch,
KV caches included, before the next pass, so a long request batched with short or abandoned ones costs only
its own rows (and Q_D stops once no rectified row is left). Each row's distribution is built exactly as in
the local sampler and the log-probabilities returned are those of the distribution the token was drawn from
(after rectification when it is on).
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


@dataclass
class _Batch:
    """The rows still decoding (their indices in ``rows``) and the state the next forward pass reads.

    Finished and cancelled rows are dropped (:meth:`keep`) before that pass so that they cost nothing more."""

    index: list[int]  # the row of ``rows`` behind each batch row
    ids: torch.Tensor  # the next input: the left-padded prompts, then each row's last token
    mask: torch.Tensor
    pos: torch.Tensor
    cache: Any = None  # the generator's KV cache (None until the prompts ran)
    q_cache: Any = None  # Q_D's own KV cache (stays None when Q_D reads the generator's hidden state)
    q_device: torch.device | None = None  # where Q_D's cache lives

    def keep(self, keep: list[int]) -> None:
        """Keep batch rows ``keep`` only, KV caches included (each row's own state is unchanged)."""
        idx = torch.tensor(keep, device=self.ids.device)
        self.index = [self.index[b] for b in keep]
        self.ids, self.mask, self.pos = self.ids[idx], self.mask[idx], self.pos[idx]
        if self.cache is not None:
            self.cache.batch_select_indices(idx)
        if self.q_cache is not None:
            self.q_cache.batch_select_indices(idx.to(self.q_device))

    def advance(self, token: torch.Tensor) -> None:
        """Make each row's sampled token its next input, one position on."""
        self.ids = token.unsqueeze(-1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.index), 1)], -1)
        self.pos = self.pos[:, -1:] + 1


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

        ``cancelled`` (asked before each step, one flag per row of ``rows``) flags rows nobody waits for any
        more (their client went away): they stop there, ``finish_reason`` None. Finished and cancelled rows
        leave the batch before the next forward pass and the batch ends once no row is left, so an abandoned
        long request does not hold the worker. Each row has its own generator: the others' tokens are unchanged.
        """
        s = self.sampler
        dev = s.device
        configs = [self.config_for(r) for r in rows]
        gens = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in rows]
        ids, mask = left_pad([r.prompt_ids for r in rows], s.pad_id)
        mask = mask.to(dev)
        batch = _Batch(list(range(len(rows))), ids.to(dev), mask, position_ids_from_mask(mask))
        vm = s.value_model if any(c.rectify for c in configs) else None
        if vm is not None:
            batch.q_device = next(vm.parameters()).device
        eos = s.eos_ids.to(dev)
        outs = [RowOutput() for _ in rows]
        for t in range(max((r.max_tokens for r in rows), default=0)):
            keep = self._running(batch, outs, cancelled)
            if not keep:
                break
            if len(keep) < len(batch.index):
                batch.keep(keep)
                if vm is not None and not any(configs[i].rectify for i in batch.index):
                    vm = batch.q_cache = None  # no rectified row left: Q_D stops too
            logits, q = self._forward(batch, vm)
            live = batch.index
            probs, dead, outside = self._distributions(logits[:, : self.vocab_size], q, [rows[i] for i in live],
                                                       [configs[i] for i in live])
            greedy = torch.tensor([not configs[i].do_sample for i in live], device=dev)
            token = draw(probs, [gens[i] for i in live], greedy)
            stop = torch.isin(token, eos).tolist()
            for b, (i, tok) in enumerate(zip(live, token.tolist(), strict=True)):
                self._record(outs[i], rows[i], probs[b], tok, bool(dead[b]), bool(outside[b]))
                if stop[b] or t + 1 >= rows[i].max_tokens:
                    outs[i].finish_reason = "stop" if stop[b] else "length"
                if rows[i].on_token is not None:
                    rows[i].on_token(t, outs[i])
            batch.advance(token)
        return outs

    @staticmethod
    def _running(batch: _Batch, outs: list[RowOutput], cancelled: Callable[[], Sequence[bool]] | None) -> list[int]:
        """Batch rows that go on: not finished, and not cancelled (asked only while some row is left)."""
        keep = [b for b, i in enumerate(batch.index) if outs[i].finish_reason is None]
        if keep and cancelled is not None:
            gone = cancelled()
            keep = [b for b in keep if not gone[batch.index[b]]]
        return keep

    def _forward(self, batch: _Batch, vm: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generator logits (and Q_D's values when ``vm`` is given) after the batch's next input: the prompts
        on the first call (which starts the KV caches), one token per row after that."""
        logits, hidden, batch.cache = lm_step(self.sampler.generator, batch.ids, batch.mask, batch.pos, batch.cache)
        if vm is None:
            return logits, None
        q, batch.q_cache = self._q(vm, hidden, batch.ids, batch.mask, batch.pos, batch.q_cache)
        return logits, q

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
