"""Benchmark rectified decoding against plain sampling, all modes in one process on the same prompts.

Modes: ``plain`` (the same loop, no Q_D), ``rectified_cached`` (separate Q_D with its own KV cache, one new
token per step), ``rectified_recompute`` (Q_D over the whole prefix every step: the original algorithm) and
``rectified_shared`` (Q head on the generator's own hidden states: one forward per step). Rounds run the
modes in turn (interleaved, so load on a shared machine hits all of them alike) and each mode keeps its
fastest round. ``ratio_vs_plain`` = mode time / plain time (how many times slower than plain), within one
``support`` case: ``full`` (pure sampling: Q_D's head on the whole vocabulary) or ``top_k<N>`` (every mode,
plain included, samples from the top N tokens; the rectified modes run Q_D's head on those N only). Models run
in ``dtype`` (``auto``: bf16 where native, see rectify/precision.py); the sampling math stays fp32.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from omegaconf import OmegaConf

from rectify.decoding import DecodingConfig, RectifiedSampler
from rectify.lm import load_lm
from rectify.precision import dtype_name, resolve_dtype
from rectify.value_model import ValueModel

MODES = ("plain", "rectified_cached", "rectified_recompute", "rectified_shared")


def _prompts(vocab: int, batch: int, length: int, seed: int, special: set[int]) -> torch.Tensor:
    """Random non-special token ids: every row exactly ``length`` tokens (no padding to blur timings)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=g)
    for s in special:
        ids[ids == s] = (s + 1) % vocab
    return ids


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA kernels so a timing covers the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _models(cfg: Any, modes: list[str]) -> tuple[Any, Any, ValueModel | None, ValueModel | None]:
    """Generator, tokenizer, a separate Q_D and a Q_D sharing the generator, all in ``cfg.dtype``."""
    device = torch.device(cfg.get("device") or "cpu")
    dtype = resolve_dtype(cfg.get("dtype", "float32"), device, "decoding bench dtype")
    generator, tok = load_lm({**OmegaConf.to_container(cfg.generator, resolve=True), "dtype": dtype_name(dtype)})
    generator.to(device)
    value_cfg = OmegaConf.to_container(cfg.value, resolve=True)
    separate = shared = None
    if {"rectified_cached", "rectified_recompute"} & set(modes):
        backbone = copy.deepcopy(generator) if cfg.value_backbone is None else load_lm(cfg.value_backbone)[0]
        separate = ValueModel.from_backbone(backbone, value_cfg, tok).to(device, dtype).eval()
    if "rectified_shared" in modes:
        shared = ValueModel.from_backbone(generator, value_cfg, tok).to(device, dtype).eval()
    return generator, tok, separate, shared


def _samplers(models: tuple[Any, Any, ValueModel | None, ValueModel | None], cfg: Any, modes: list[str],
              top_k: int) -> dict[str, RectifiedSampler]:
    generator, tok, separate, shared = models
    dec = dict(max_new_tokens=1, min_new_tokens=0, do_sample=True, epsilon=cfg.epsilon, top_k=top_k)
    out: dict[str, RectifiedSampler] = {}
    for mode in modes:
        if mode == "plain":
            out[mode] = RectifiedSampler(generator, tok, None, DecodingConfig(rectify=False, **dec))
        elif mode == "rectified_cached":
            out[mode] = RectifiedSampler(generator, tok, separate, DecodingConfig(q_cache=True, **dec))
        elif mode == "rectified_recompute":
            out[mode] = RectifiedSampler(generator, tok, separate, DecodingConfig(q_cache=False, **dec))
        elif mode == "rectified_shared":
            out[mode] = RectifiedSampler(generator, tok, shared, DecodingConfig(shared_backbone=True, **dec))
        else:
            raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
    return out


def run(cfg: Any) -> Iterator[dict[str, Any]]:
    """Yield one row per (size case, mode)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    modes = list(cfg.modes)
    models = _models(cfg, modes)
    tok = models[1]
    special = set(tok.all_special_ids)
    cases = [(int(cfg.prompt_tokens), int(cfg.new_tokens))]
    if cfg.get("long"):
        cases.append((int(cfg.long_prompt_tokens), int(cfg.long_new_tokens)))
    for support, (prompt_tokens, new_tokens) in itertools.product(list(cfg.get("supports") or ["full"]), cases):
        top_k = 0 if support == "full" else int(str(support).removeprefix("top_k"))
        samplers = _samplers(models, cfg, modes, top_k)
        ids = _prompts(len(tok), int(cfg.batch_size), prompt_tokens, int(cfg.seed), special)
        mask = torch.ones_like(ids)
        times: dict[str, list[float]] = {m: [] for m in modes}
        for s in samplers.values():  # EOS blocked: every mode generates exactly new_tokens per row
            s.cfg.max_new_tokens = s.cfg.min_new_tokens = new_tokens
        for round_ in range(int(cfg.warmup) + int(cfg.repeats)):
            for mode in modes:
                t0 = time.perf_counter()
                samplers[mode].generate_ids(ids, mask, seeds=list(range(ids.shape[0])))
                _sync(models[0].device)
                if round_ >= int(cfg.warmup):
                    times[mode].append(time.perf_counter() - t0)
        base = min(times["plain"]) if "plain" in times else None
        for mode in modes:
            best = min(times[mode])
            yield {
                "bench": "decoding", "mode": mode, "support": support,
                "dtype": dtype_name(next(models[0].parameters()).dtype), "tokens_per_s": round(ids.shape[0] * new_tokens / best, 2),
                "ratio_vs_plain": round(best / base, 3) if base else None,
                "seconds_min": round(best, 4), "seconds_median": round(statistics.median(times[mode]), 4),
                "batch_size": ids.shape[0], "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                "repeats": int(cfg.repeats), "threads": torch.get_num_threads(), "device": str(models[0].device),
                "generator": cfg.generator.get("source") or cfg.generator.get("name_or_path"),
                # Q_D blocks read from the generator's forward (rectify/decoding/shared_lower.py), not run
                "q_blocks_shared": samplers[mode].lower.split if samplers[mode].lower is not None else 0,
            }
