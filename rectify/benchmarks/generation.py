"""Benchmark data generation (the behaviour LM's plain sampling), one process, the same prompts for every case.

Runs the data build's own path (:class:`rectify.data.continuations.ContinuationModule`, without the
Lightning loop) on midpoint prompts of the bundled insults data. The reference (first) case is the data build
as it was before this benchmark existed (``legacy: true``): fp32, 80 sequences a batch (10 prompts x 8),
prompts in file order, ``model.generate`` with a per-row ``torch.multinomial`` logits processor (every sample
re-encodes its prompt, finished rows keep computing). ``fp32_b80`` is today's loop at that setting; the
default case uses the config's settings (``dtype: auto``, ``batch_rows: auto``, sorted by length). Cases run
in turn for ``repeats`` rounds; each keeps its fastest. ``ratio_vs_fp32_b80`` = tokens/s over the first case's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf

from rectify.data import continuations as cont
from rectify.lm import load_lm
from rectify.precision import dtype_name, resolve_dtype


def bench_prompts(n: int, seed: int) -> list[tuple[int, str]]:
    """``n`` midpoint prompts of the insults train split (a seeded sample): (index, text)."""
    from rectify.data.prompts import split_midpoint
    from rectify.data.sources import read_insults

    texts = [cut[0] for row in read_insults("train") if (cut := split_midpoint(row.text)) is not None]
    random.Random(seed).shuffle(texts)
    return list(enumerate(texts[:n]))


def _module(lm_cfg: dict[str, Any], sampling: cont.SamplingConfig, dtype: str,
            device: torch.device) -> cont.ContinuationModule:
    model, tok = load_lm({**lm_cfg, "dtype": dtype})
    module = cont.ContinuationModule(sampling, model=model.to(device), tokenizer=tok)
    module.setup("predict")
    return module


class _RowwiseMultinomial:
    """The data build's former sampler (a ``generate`` logits processor): one ``torch.multinomial`` per row,
    only the drawn token left finite. Kept here as the benchmark's reference only."""

    def __init__(self, seeds: list[int], prompt_len: int, min_new_tokens: int, eos: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.prompt_len, self.min_new_tokens, self.eos = prompt_len, min_new_tokens, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        if input_ids.shape[1] - self.prompt_len < self.min_new_tokens:
            scores[:, self.eos] = float("-inf")
        probs = torch.softmax(scores, -1)
        chosen = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(self.generators)])
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)


def _legacy_batch(module: cont.ContinuationModule, batch: list[tuple[int, str]]) -> int:
    from transformers import GenerationConfig, LogitsProcessorList

    cfg, tok, k = module.sampling, module.tokenizer, module.sampling.k
    tok.padding_side = "left"
    enc = tok([t for _, t in batch], return_tensors="pt", padding=True, truncation=True,
              max_length=cfg.max_prompt_tokens)
    ids, mask = enc["input_ids"].repeat_interleave(k, 0), enc["attention_mask"].repeat_interleave(k, 0)
    eos = module._eos_ids()
    proc = _RowwiseMultinomial([cont.row_seed(cfg.seed, i, j) for i, _ in batch for j in range(k)], ids.shape[1],
                               cfg.min_new_tokens, eos)
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=tok.pad_token_id, eos_token_id=eos or None)
    out = module.lm.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg,
                             logits_processor=LogitsProcessorList([proc]))[:, ids.shape[1]:]
    # tokens up to and including the first EOS, as row_steps counts them
    ended = torch.isin(out, torch.tensor(eos)).long().cumsum(-1)
    return int(((ended == 0) | ((ended == 1) & torch.isin(out, torch.tensor(eos)))).sum())


def _run(module: cont.ContinuationModule, prompts: list[tuple[int, str]], per_batch: int,
         legacy: bool = False) -> tuple[float, int]:
    """Seconds and new tokens (EOS included) to continue every prompt."""
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(prompts), per_batch):
        batch = prompts[start: start + per_batch]
        if legacy:
            tokens += _legacy_batch(module, batch)
            continue
        cfg = module.sampling
        ids, mask = module.sampler.encode([t for _, t in batch], max_tokens=cfg.max_prompt_tokens)
        res = module.sampler.generate_ids(ids, mask, [cont.row_seed(cfg.seed, i, 0) for i, _ in batch])
        tokens += res.row_steps
    return time.perf_counter() - t0, tokens


def run(cfg: Any) -> Iterator[dict[str, Any]]:
    """Yield one row per case (the fp32 / 80-row reference first)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    lm_cfg = OmegaConf.to_container(cfg.generator, resolve=True)
    sampling = cont.SamplingConfig(k=int(cfg.k), max_new_tokens=int(cfg.max_new_tokens),
                                   min_new_tokens=int(cfg.min_new_tokens), seed=int(cfg.seed))
    prompts = bench_prompts(int(cfg.num_prompts), int(cfg.seed))
    cases = [dict(c) for c in cfg.cases]
    device = torch.device(cfg.get("device") or "cpu")
    modules = {}
    for case in cases:
        case["dtype_resolved"] = dtype_name(resolve_dtype(case["dtype"], device, "generation bench dtype"))
        case["rows"] = cont.batch_rows(case["batch_rows"], device.type)
        if case["dtype_resolved"] not in modules:
            modules[case["dtype_resolved"]] = _module(lm_cfg, sampling, case["dtype_resolved"], device)
    best: list[tuple[float, int] | None] = [None] * len(cases)
    for round_ in range(int(cfg.warmup) + int(cfg.repeats)):
        for i, case in enumerate(cases):
            order = cont.by_length(prompts) if case["sort"] else prompts
            if round_ < int(cfg.warmup):
                order = order[: max(1, len(order) // 8)]
            secs, tokens = _run(modules[case["dtype_resolved"]], order, cont.prompts_per_batch(case["rows"], sampling.k),
                                bool(case.get("legacy", False)))
            if round_ >= int(cfg.warmup) and (best[i] is None or secs < best[i][0]):
                best[i] = (secs, tokens)
    ref = best[0][1] / best[0][0]
    for case, (secs, tokens) in zip(cases, best, strict=True):
        yield {"bench": "generation", "case": case["name"], "dtype": case["dtype_resolved"], "batch": case["rows"],
               "sorted": bool(case["sort"]), "tokens_per_s": round(tokens / secs, 1),
               "ratio_vs_fp32_b80": round(tokens / secs / ref, 3), "seconds": round(secs, 2), "tokens": tokens,
               "prompts": len(prompts), "k": sampling.k, "threads": torch.get_num_threads(), "device": str(device),
               "generator": lm_cfg.get("source") or lm_cfg.get("name_or_path")}
