"""Stage 2: k sampled continuations per prompt from the behaviour LM, as Lightning ``predict``.

Plain sampling (temperature, top-k, top-p) of the *un-rectified* LM: this is the behaviour policy whose
outcomes Q_D learns from. Every (prompt, sample) row draws from its own ``torch.Generator`` seeded by
(seed, prompt index, sample index), so a resumed or differently batched / sharded run samples the same
continuations (up to float noise of padding). The loop is the project's own sampler
(:class:`rectify.decoding.RectifiedSampler` without Q_D): batches of a few hundred rows (``batch_rows``),
prompts sorted by length so little is padding, and rows that reach EOS leave the batch.

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

from rectify.data.jsonl import JSONLAppender, iter_jsonl, repair_tail, write_jsonl_atomic
from rectify.devices import require_accelerator

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


def decoding_config(cfg: SamplingConfig) -> Any:
    """The plain (un-rectified) decoding settings of the behaviour policy."""
    from rectify.decoding import DecodingConfig

    return DecodingConfig(rectify=False, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k or 0,
                          top_p=cfg.top_p if cfg.top_p is not None else 1.0, max_new_tokens=cfg.max_new_tokens,
                          min_new_tokens=cfg.min_new_tokens, num_return_sequences=cfg.k)


def prompts_per_batch(batch_rows: int, k: int) -> int:
    """Prompts per batch so that a batch holds about ``batch_rows`` sequences (at least one prompt)."""
    return max(1, int(batch_rows) // max(1, int(k)))


AUTO_ROWS = {"cpu": 512, "cuda": 1024}  # sequences per batch that fill the device (docs/performance.md)


def batch_rows(setting: int | str | None, accelerator: str | None = None) -> int:
    """``batch_rows: auto`` -> a size per device (CUDA when the trainer's accelerator is a GPU), else as given."""
    if setting in (None, "auto"):
        return AUTO_ROWS["cuda" if accelerator in ("gpu", "cuda") else "cpu"]
    return int(setting)


def by_length(items: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """Prompts ordered by length (then index), so a batch pads little; outputs do not depend on the order."""
    return sorted(items, key=lambda item: (len(item[1]), item[0]))


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
        from rectify.decoding import RectifiedSampler

        self.sampler = RectifiedSampler(self.lm, self.tokenizer, None, decoding_config(self.sampling),
                                        eos_token_ids=self._eos_ids())

    def _eos_ids(self) -> list[int]:
        eos = self.lm.generation_config.eos_token_id if self.lm.generation_config is not None else None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos or [])

    @torch.no_grad()
    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0) -> list[dict]:
        cfg = self.sampling
        ids, mask = self.sampler.encode(batch["text"], max_tokens=cfg.max_prompt_tokens)
        # the sampler seeds sample j of a prompt from (prompt seed, j): one seed per prompt
        seeds = [row_seed(cfg.seed, idx, 0) for idx in batch["index"]]
        res = self.sampler.generate_ids(ids, mask, seeds)
        records = []
        for i, idx in enumerate(batch["index"]):
            gens = [{"text": t} for t in res.texts[i * cfg.k:(i + 1) * cfg.k]]
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
    """Continue every prompt not yet in a shard (shortest first); returns how many were left on this call."""
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    done = done_indices(shard_dir)
    todo = by_length([(i, p["prompt"]["text"]) for i, p in enumerate(prompts) if i not in done])
    log.info("continuations: %d prompts done, %d to go", len(done), len(todo))
    if todo:
        loader = DataLoader(PromptDataset(todo), batch_size=batch_size, shuffle=False, collate_fn=collate)
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    return len(todo)


def make_trainer(trainer_kwargs: dict[str, Any], shard_dir: str | Path) -> pl.Trainer:
    """A predict-only Trainer (no logger, no checkpoints) with the shard writer attached."""
    kwargs = {"accelerator": "cpu", "devices": 1, **trainer_kwargs,
              "logger": False, "enable_checkpointing": False, "enable_model_summary": False}
    require_accelerator(kwargs["accelerator"], "build.continuations.trainer.accelerator")
    if kwargs.get("precision") == "auto":  # a training setting: generation's dtype is the LM's own (lm.dtype)
        kwargs["precision"] = "32-true"
    callbacks = list(kwargs.pop("callbacks", []) or [])
    return pl.Trainer(callbacks=[*callbacks, ShardWriter(shard_dir)], **kwargs)
