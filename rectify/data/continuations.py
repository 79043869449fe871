"""Stage 2: k sampled continuations per prompt from the behaviour LM, as Lightning ``predict``.

Plain sampling (temperature, top-k, top-p) of the *un-rectified* LM: this is the behaviour policy whose
outcomes Q_D learns from. Every (prompt, sample) row draws from its own ``torch.Generator`` seeded by
(seed, prompt index, sample index), so a resumed or differently batched / sharded run samples the same
continuations (up to float noise of padding). The sampling happens in a logits processor that leaves a
single finite logit, so ``generate`` (greedy) keeps its KV cache, EOS and padding handling.

Each rank appends its results to its own shard file through a :class:`~lightning.pytorch.callbacks.
BasePredictionWriter`; rank 0 merges the shards in prompt order at the end. A ``ddp`` trainer (GPUs,
nodes) or ``ddp_spawn`` on CPU shards the prompts; finished prompts (in any shard) are skipped on resume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, Dataset
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from rectify.data.jsonl import JSONLAppender, iter_jsonl, repair_tail, write_jsonl_atomic

log = logging.getLogger(__name__)

SHARD_GLOB = "shard-rank*.jsonl"


@dataclass
class SamplingConfig:
    """How continuations are sampled (mirrors ``build.continuations`` in the config)."""

    k: int = 8
    max_new_tokens: int = 20
    min_new_tokens: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    max_prompt_tokens: int = 128


def row_seed(seed: int, prompt_index: int, sample: int) -> int:
    """Seed of one (prompt, sample) row: independent of batching and sharding."""
    return (seed * 1_000_003 + prompt_index * 9_176 + sample * 7_919 + 12_345) % (2**63 - 1)


class RowwiseSampler(LogitsProcessor):
    """Sample the next token per row with its own generator; return logits with only that token finite.

    Applies temperature, top-k and top-p first, and forbids EOS until ``min_new_tokens`` were generated.
    """

    def __init__(self, seeds: Sequence[int], prompt_len: int, cfg: SamplingConfig, eos_ids: Sequence[int],
                 device: torch.device) -> None:
        self.generators = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            self.generators.append(g)
        self.prompt_len = prompt_len
        self.cfg = cfg
        self.eos_ids = list(eos_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        step = input_ids.shape[1] - self.prompt_len
        if step < self.cfg.min_new_tokens and self.eos_ids:
            scores[:, self.eos_ids] = float("-inf")
        if self.cfg.temperature != 1.0:
            scores = scores / self.cfg.temperature
        if self.cfg.top_k:
            kth = torch.topk(scores, min(self.cfg.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.cfg.top_p is not None and self.cfg.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least the top token)
            drop = (sorted_p.cumsum(-1) - sorted_p) >= self.cfg.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        chosen = torch.stack([torch.multinomial(probs[i], 1, generator=g)[0]
                              for i, g in enumerate(self.generators)])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


class PromptDataset(Dataset):
    """(prompt index, prompt text) pairs still to be continued."""

    def __init__(self, items: Sequence[tuple[int, str]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, str]:
        return self.items[i]


def collate(batch: list[tuple[int, str]]) -> dict[str, Any]:
    return {"index": [b[0] for b in batch], "text": [b[1] for b in batch]}


class ContinuationModule(pl.LightningModule):
    """Wraps the behaviour LM; ``predict_step`` returns one RealToxicityPrompts-shaped record per prompt.

    Give either ``lm_cfg`` (each rank loads the LM itself in ``setup``: nothing big is pickled to
    workers) or a ready ``model`` and ``tokenizer`` (tests).
    """

    def __init__(self, sampling: SamplingConfig, lm_cfg: Any = None, model: Any = None, tokenizer: Any = None,
                 num_threads: int | None = None) -> None:
        super().__init__()
        if lm_cfg is None and model is None:
            raise ValueError("ContinuationModule needs lm_cfg or model + tokenizer")
        self.sampling = sampling
        self.lm_cfg = lm_cfg
        self.lm = model
        self.tokenizer = tokenizer
        self.num_threads = num_threads

    def setup(self, stage: str) -> None:
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        if self.lm is None:
            from rectify.lm import load_lm

            self.lm, self.tokenizer = load_lm(self.lm_cfg)
            self.lm.to(self.device)
        self.lm.eval()

    def _eos_ids(self) -> list[int]:
        eos = self.lm.generation_config.eos_token_id if self.lm.generation_config is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0) -> list[dict]:
        cfg = self.sampling
        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(batch["text"], return_tensors="pt", padding=True, truncation=True,
                  max_length=cfg.max_prompt_tokens, add_special_tokens=True)
        ids = enc["input_ids"].repeat_interleave(cfg.k, dim=0).to(self.device)
        mask = enc["attention_mask"].repeat_interleave(cfg.k, dim=0).to(self.device)
        seeds = [row_seed(cfg.seed, idx, j) for idx in batch["index"] for j in range(cfg.k)]
        eos = self._eos_ids()
        sampler = RowwiseSampler(seeds, ids.shape[1], cfg, eos, self.device)
        gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, do_sample=False, num_beams=1,
                                   pad_token_id=tok.pad_token_id, eos_token_id=eos or None)
        out = self.lm.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg,
                               logits_processor=LogitsProcessorList([sampler]))
        texts = tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
        records = []
        for i, idx in enumerate(batch["index"]):
            gens = [{"text": t} for t in texts[i * cfg.k:(i + 1) * cfg.k]]
            records.append({"index": int(idx), "generations": gens})
        return records


class ShardWriter(BasePredictionWriter):
    """Append each batch's records to ``<shard_dir>/shard-rank<R>.jsonl`` as soon as it is done.

    Lightning's predict loop notes a SIGTERM but, unlike fit, never stops for it; this writer stops the run
    once the batch in progress is saved, so a killed job exits promptly and resumes where it stopped.
    """

    def __init__(self, shard_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.shard_dir = Path(shard_dir)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        path = self.shard_dir / f"shard-rank{trainer.global_rank:04d}.jsonl"
        with JSONLAppender(path) as out:
            out.extend(prediction)
        if trainer.received_sigterm:
            log.warning("SIGTERM: stopping after the batch just saved to %s; rerun to resume", path)
            raise SIGTERMException


def done_indices(shard_dir: str | Path) -> set[int]:
    """Prompt indices already written in any shard (repairs interrupted shard tails first)."""
    done: set[int] = set()
    for path in sorted(Path(shard_dir).glob(SHARD_GLOB)):
        repair_tail(path)
        done.update(int(r["index"]) for r in iter_jsonl(path))
    return done


def merge_shards(shard_dir: str | Path, prompts: Sequence[dict], out_path: str | Path) -> int:
    """Join shard records with their prompts in prompt order; error if a prompt is missing.

    A prompt that appears in two shards (possible only after a crash between a write and a restart under
    a different world size) is kept once.
    """
    by_index: dict[int, dict] = {}
    for path in sorted(Path(shard_dir).glob(SHARD_GLOB)):
        for rec in iter_jsonl(path):
            by_index.setdefault(int(rec["index"]), rec)
    missing = [i for i in range(len(prompts)) if i not in by_index]
    if missing:
        raise RuntimeError(f"{len(missing)} prompt(s) have no continuations yet (first: {missing[:5]}); "
                           "rerun stage=continuations to finish them")

    def records():
        for i, prompt in enumerate(prompts):
            yield {"prompt": prompt["prompt"], "source": prompt.get("source"), "split": prompt.get("split"),
                   "label": prompt.get("label"), "prompt_index": i, "generations": by_index[i]["generations"]}

    return write_jsonl_atomic(out_path, records())


def generate_continuations(
    prompts: Sequence[dict],
    shard_dir: str | Path,
    module: ContinuationModule,
    trainer: pl.Trainer,
    *,
    batch_size: int,
) -> int:
    """Continue every prompt not yet in a shard; returns how many were left to do on this call."""
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    done = done_indices(shard_dir)
    todo = [(i, p["prompt"]["text"]) for i, p in enumerate(prompts) if i not in done]
    log.info("continuations: %d prompts done, %d to go", len(done), len(todo))
    if todo:
        loader = DataLoader(PromptDataset(todo), batch_size=batch_size, shuffle=False, collate_fn=collate)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    return len(todo)


def make_trainer(trainer_kwargs: dict[str, Any], shard_dir: str | Path) -> pl.Trainer:
    """A predict-only Trainer (no logger, no checkpoints) with the shard writer attached."""
    kwargs = {"accelerator": "cpu", "devices": 1, **trainer_kwargs,
              "logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    callbacks = list(kwargs.pop("callbacks", []) or [])
    return pl.Trainer(callbacks=[*callbacks, ShardWriter(shard_dir)], **kwargs)
