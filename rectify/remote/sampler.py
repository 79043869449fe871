"""The remote generator: the API's top-K next-token distribution, rectified by a local Q_D, sampled here.

Per step every unfinished row's prefix (prompt + tokens so far, as ids) is sent with ``max_tokens=1`` and
``logprobs=K``; rows that share a prefix (the k samples of a prompt at step 0) share one request. The
returned tokens are mapped to Q_D's ids (:class:`TokenMapper`), their probabilities renormalised over the
top-K support (the mass outside it is dropped and reported), then the local pipeline runs: min-new-tokens,
temperature / top-k / top-p, caps, KL projection, one seeded uniform per row. Q_D keeps its KV cache and
sees one new token per step, as in the local sampler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rectify.decoding.config import DecodingConfig
from rectify.decoding.forward import q_step
from rectify.decoding.rows import distribution, draw, encode_prompt, left_pad, row_generators
from rectify.decoding.sampler import GenerationResult, VocabularyMismatch
from rectify.lm import (
    LMConfig,
    load_tokenizer,
    position_ids_from_mask,
    same_vocabulary,
    vocabulary_difference,
)
from rectify.remote.client import CompletionsClient, RemoteAPIError, RemoteConfig
from rectify.remote.tokens import mapper_for

log = logging.getLogger(__name__)

# digits, accents, a run of spaces, code, CJK and an emoji: tokenizers that differ split it differently
TOKENIZER_PROBE = ("Tokenizer check: 1234567 numbers, Très élégant café,    indented code {x: [1, 2]}, "
                   "naïve façade 東京 🙂.")


class RemoteSampler:
    """``generate(prompts, seeds)`` like :class:`RectifiedSampler`, with the LM behind an API."""

    shared = False  # Q_D never shares the (remote) generator's backbone

    def __init__(self, remote: RemoteConfig, tokenizer: PreTrainedTokenizerBase, value_model: Any = None,
                 config: DecodingConfig | Any = None, transport: Any = None):
        self.remote = remote
        self.cfg = DecodingConfig.from_any(config)
        self.tokenizer = tokenizer
        self.value_model = value_model.eval() if value_model is not None else None
        if self.cfg.rectify and value_model is None:
            raise ValueError("rectify=True needs a value model (Q_D); pass rectify=False for plain sampling")
        vtok = getattr(value_model, "tokenizer", None)
        if vtok is not None and not same_vocabulary(tokenizer, vtok):
            raise VocabularyMismatch("the API's tokenizer (lm.tokenizer, first) and Q_D's (second) differ ("
                                     f"{vocabulary_difference(tokenizer, vtok)})")
        self.vocab_size = len(tokenizer)
        self.mapper = mapper_for(tokenizer)
        self.transport = transport
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = torch.tensor(sorted({int(tokenizer.eos_token_id)}), dtype=torch.long)
        self.tokenizer_checked = not remote.check_tokenizer

    async def check_tokenizer(self, client: CompletionsClient) -> None:
        """Refuse an API whose tokenizer is not this one. Prompts go out and tokens come back as ids (or token
        strings) of this tokenizer: under another one they would silently mean other tokens. The API's count of
        a probe text's tokens must be this tokenizer's (with or without its special tokens, e.g. BOS)."""
        counted = await client.prompt_tokens(TOKENIZER_PROBE)
        self.tokenizer_checked = True
        if counted is None:
            log.warning("%s reports no usage.prompt_tokens: cannot check that its tokenizer is Q_D's",
                        self.remote.base_url)
            return
        ours = {len(self.tokenizer(TOKENIZER_PROBE, add_special_tokens=special)["input_ids"]) for special in (True, False)}
        if counted not in ours:
            raise VocabularyMismatch(
                f"the API at {self.remote.base_url} counts {counted} tokens in a probe text where "
                f"{self.tokenizer.name_or_path}'s tokenizer counts {min(ours)}: the API's LM has another tokenizer, "
                "so the token ids sent and returned would stand for other tokens. Q_D can only rectify an LM that "
                "shares its vocabulary (lm.tokenizer names the API's; lm.check_tokenizer=false skips this check)")

    def generate(self, prompts: Sequence[str], seeds: Sequence[int] | int | None = None) -> GenerationResult:
        """``num_return_sequences`` continuations per prompt; rows are prompt-major, texts exclude the prompt."""
        if isinstance(seeds, int):
            seeds = [seeds + i for i in range(len(prompts))]
        return asyncio.run(self._generate([encode_prompt(self.tokenizer, p) for p in prompts], seeds))

    def _dense_logits(self, answers: Sequence[dict[str, float]]) -> tuple[torch.Tensor, float]:
        """Log of the renormalised top-K distributions as ``[rows, V]`` (-inf outside), and the dropped mass."""
        logits = torch.full((len(answers), self.vocab_size), float("-inf"), dtype=torch.float64)
        dropped = 0.0
        for r, top in enumerate(answers):
            ids, lps = [], []
            for token, lp in top.items():
                i = self.mapper.lookup(token)
                if i is None:
                    if self.remote.on_unmapped == "error":
                        raise RemoteAPIError(f"the API returned token {token!r}, which is not exactly one id of "
                                             "Q_D's vocabulary (wrong lm.tokenizer?)")
                    continue
                ids.append(i)
                lps.append(lp)
            if not ids:
                raise RemoteAPIError(f"none of the {len(top)} tokens the API returned maps to Q_D's vocabulary "
                                     f"(e.g. {next(iter(top), None)!r}); is lm.tokenizer the API's tokenizer?")
            lp_t = torch.tensor(lps, dtype=torch.float64)
            logits[r].index_put_((torch.tensor(ids),), lp_t, accumulate=False)
            dropped += max(0.0, 1.0 - float(lp_t.exp().sum()))
        return logits, dropped

    async def _generate(self, prompt_ids: list[list[int]], seeds: Sequence[int] | None) -> GenerationResult:
        cfg = self.cfg
        k = cfg.num_return_sequences
        rows = [list(p) for p in prompt_ids for _ in range(k)]
        n = len(rows)
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise ValueError(f"{len(seeds)} seeds for {len(prompt_ids)} prompts")
        gens = row_generators(seeds, k) if seeds is not None else None
        vm = self.value_model if cfg.rectify else None
        q = q_cache = ids = mask = pos = None
        if vm is not None:
            ids, mask = left_pad(rows, self.pad_id)
            pos = position_ids_from_mask(mask)
            q, q_cache = q_step(vm, ids, mask, pos, use_cache=cfg.q_cache, target=cfg.q_head == "target")
        out = torch.full((n, cfg.max_new_tokens), self.pad_id, dtype=torch.long)
        finished = torch.zeros(n, dtype=torch.bool)
        lengths = torch.zeros(n, dtype=torch.long)
        outside = 0
        row_dead = torch.zeros(n, dtype=torch.long)  # per row; the run's totals are their sums
        row_step_count = torch.zeros(n, dtype=torch.long)
        dropped = 0.0
        refused_before = sum(self.mapper.refused.values())
        async with CompletionsClient(self.remote, self.transport) as client:
            if not self.tokenizer_checked:
                await self.check_tokenizer(client)
            for t in range(cfg.max_new_tokens):
                # Only unfinished rows are asked for, projected and drawn for (as in the local loop, where
                # finished rows leave the batch): each row's generator is used once per token it generates.
                alive = (~finished).nonzero().squeeze(-1)
                active = alive.tolist()
                unique = list(dict.fromkeys(tuple(rows[i]) for i in active))
                answers = dict(zip(unique, await client.next_token_logprobs(unique), strict=True))
                logits, lost = self._dense_logits([answers[tuple(rows[i])] for i in active])
                dropped += lost
                logits = logits.float()
                if t < cfg.min_new_tokens:
                    logits = logits.index_fill(-1, self.eos_ids, float("-inf"))
                probs, proj = distribution(logits, q[alive] if q is not None else None, cfg, self.eos_ids)
                row_step_count[alive] += 1
                if proj is not None:
                    outside += int(proj.outside_support.sum())
                    row_dead[alive] += proj.dead_end.cpu().long()
                drawn = draw(probs, [gens[i] for i in active] if gens is not None else None,
                             greedy=not cfg.do_sample)
                token = torch.full((n,), self.pad_id, dtype=torch.long)
                token[alive] = drawn
                out[:, t] = token
                is_eos = torch.isin(token, self.eos_ids) & ~finished
                lengths += (~finished & ~is_eos).long()
                finished = finished | is_eos
                for i in active:
                    rows[i].append(int(token[i]))
                if bool(finished.all()) or t == cfg.max_new_tokens - 1:
                    break
                if vm is not None:  # Q_D keeps every row (finished ones see padding) and its KV cache
                    mask = torch.cat([mask, mask.new_ones(n, 1)], -1)
                    step_ids = token.unsqueeze(-1)
                    if cfg.q_cache:
                        pos = pos[:, -1:] + 1
                        q, q_cache = q_step(vm, step_ids, mask, pos, q_cache, target=cfg.q_head == "target")
                    else:
                        ids = torch.cat([ids, step_ids], -1)
                        q, _ = q_step(vm, ids, mask, position_ids_from_mask(mask), use_cache=False,
                                      target=cfg.q_head == "target")
            stats = dict(client.stats)
        lens = lengths.tolist()
        texts = self.tokenizer.batch_decode([s[:m].tolist() for s, m in zip(out, lens, strict=True)],
                                            skip_special_tokens=True)
        unmapped = sum(self.mapper.refused.values()) - refused_before
        if unmapped:
            log.warning("%d returned tokens matched no single id of Q_D's vocabulary and were left out (most "
                        "frequent: %s); is lm.tokenizer the API's tokenizer?", unmapped,
                        [t for t, _ in self.mapper.refused.most_common(5)])
        stats |= {"dropped_mass": dropped, "unmapped_tokens": unmapped}
        dead, row_steps = int(row_dead.sum()), int(row_step_count.sum())
        per_row = ({"dead_ends_per_row": row_dead.tolist(), "steps_per_row": row_step_count.tolist()}
                   if vm is not None else {})
        return GenerationResult(out, lens, texts, k, dead, outside, row_steps, stats, **per_row)


def build_remote_sampler(cfg: Any, value_model: Any = None, transport: Any = None) -> RemoteSampler:
    """A :class:`RemoteSampler` from a ``generate.yaml`` config whose ``lm`` has ``source: openai``."""
    remote = RemoteConfig.from_any(cfg.lm)
    dec = DecodingConfig.from_any(cfg.decoding)
    tokenizer = None
    if remote.tokenizer is not None:
        tokenizer = load_tokenizer(LMConfig(source="hub", name_or_path=remote.tokenizer, tokenizer=remote.tokenizer))
    elif value_model is not None and value_model.tokenizer is not None:
        tokenizer = value_model.tokenizer
    if tokenizer is None:
        raise ValueError("lm.tokenizer must name the API's tokenizer (e.g. smollm2 or gpt2) when there is no Q_D "
                         "to take it from")
    log.info("remote generator at %s, top-%d logprobs per step", remote.base_url, remote.top_logprobs)
    return RemoteSampler(remote, tokenizer, value_model, dec, transport)
