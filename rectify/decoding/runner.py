"""``scripts/generate.py``'s library side: build generator + Q_D from a config and write generations.

Seeds are per prompt (``seed + index in the prompt file``), so a resumed run, or a different batch size,
reproduces the same samples; a resume under a config that would generate differently (``RESUME_KEYS``) is
refused instead of mixing two runs in one file. Counts of dead-end fallbacks and the resolved config go to
``<out>.meta.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from rectify.cli import command_overrides
from rectify.decoding.config import DecodingConfig
from rectify.decoding.input_digest import INPUT_PATH_KEYS, input_digests, same_input
from rectify.decoding.io import (
    JsonlAppender,
    PromptFileError,
    ResumeRefused,
    exclusive_writer,
    prepare_resume,
    read_prompts,
    write_json_atomic,
)
from rectify.decoding.sampler import GenerationResult, RectifiedSampler
from rectify.devices import require_cuda
from rectify.errors import ConfigError
from rectify.evaluation.generations import flatten
from rectify.lm import load_lm, same_weights
from rectify.precision import resolve_dtype

log = logging.getLogger(__name__)


def plain_container(cfg: Any) -> Any:
    """Plain dict of a config, resolved where possible (``${hydra:...}`` fails outside a Hydra run)."""
    if not isinstance(cfg, DictConfig):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation that only Hydra's runtime can resolve
        return OmegaConf.to_container(cfg, resolve=False)


# The config keys that decide what a generations file holds: a resumed run must match them (batch size, limit,
# device and output paths may change between runs).
RESUME_KEYS = ("prompts_path", "value_model_path", "untrained_value_model", "value_config", "generator_override",
               "seed", "lm", "decoding")


# Decoding keys added after runs were recorded, with the value that draws what those runs drew (a run recorded
# before a key existed is compared as if it had this value).
# share_lower: configs/decoding lacked the key, so runs drew with the DecodingConfig default, auto.
LEGACY_DECODING = {"stop_neutral": False, "share_lower": "auto"}


def _with_legacy(config: dict[str, Any]) -> dict[str, Any]:
    decoding = config.get("decoding")
    if not isinstance(decoding, dict):
        return config
    return {**config, "decoding": {**LEGACY_DECODING, **decoding}}


def resume_conflicts(previous: dict[str, Any], current: dict[str, Any],
                     digests: Mapping[str, str | None] | None = None) -> list[str]:
    """``key: before -> now`` for every generation-defining key (``RESUME_KEYS``) that differs. An input path
    (the prompts, the Q_D) that moved but holds the same bytes is no conflict; ``digests``: the earlier run's
    recorded :func:`input_digests`."""
    previous, current = _with_legacy(previous), _with_legacy(current)   # a missing key: its legacy value
    before = flatten({k: previous.get(k) for k in RESUME_KEYS})
    now = flatten({k: current.get(k) for k in RESUME_KEYS})
    digests = digests or {}

    def differs(k: str) -> bool:
        if k in INPUT_PATH_KEYS:
            return not same_input(before.get(k), now.get(k), digests.get(k))
        return before.get(k) != now.get(k)

    return [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now)) if differs(k)]


def resolve_device(name: str) -> torch.device:
    """``device``: auto (CUDA when visible, else CPU), or a torch device name; a CUDA device this machine does not
    have is a config error, not torch's assertion from deep inside the first ``.to()``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a torch device name (auto, cpu, cuda, cuda:1, ...)") from exc
    if device.type == "cuda":
        require_cuda(f"device={name}", "use device=auto or device=cpu")
    return device


def build_sampler(cfg: Any) -> RectifiedSampler:
    """Generator from ``cfg.lm`` (+ ``cfg.generator_override``), Q_D from ``cfg.value_model_path``.

    ``cfg.untrained_value_model`` builds a fresh Q_D on a copy of the generator's config (smoke runs only).
    ``decoding.shared_backbone=true`` with a saved Q_D whose backbone equals the generator's weights drops
    Q_D's copy and reads the generator's hidden states (one forward per step).
    """
    dec = DecodingConfig.from_any(cfg.decoding)
    device = resolve_device(cfg.get("device", "auto"))
    override = cfg.get("generator_override") or {}
    lm_cfg = OmegaConf.merge(cfg.lm, override)
    if override.get("random_init") and not cfg.lm.get("random_init"):
        log.warning("generator_override (debug=smoke): a tiny random %s model stands in for lm %s", lm_cfg.family,
                    cfg.lm.get("name_or_path") or cfg.lm.get("source"))
    generator, tokenizer = load_lm(lm_cfg)
    generator.to(device)
    vm = load_value_model(cfg, dec, lm_cfg, device)
    if vm is not None:
        if dec.shared_backbone is True and vm.backbone is not generator:
            if not same_weights(vm.backbone, generator):
                raise ValueError("decoding.shared_backbone=true but Q_D's backbone weights differ from the generator's")
            vm.backbone = generator
    return RectifiedSampler(generator, tokenizer, vm, dec)


def load_value_model(cfg: Any, dec: DecodingConfig, lm_cfg: Any, device: torch.device) -> Any:
    """Q_D from ``cfg.value_model_path`` (or untrained on ``lm_cfg``, smoke runs); None when not rectifying."""
    from rectify.value_model import ValueModel

    vm = None
    if dec.rectify:
        path = cfg.get("value_model_path")
        if path:
            vm = ValueModel.from_pretrained(path, device=device, calibration=dec.calibration)
        elif cfg.get("untrained_value_model"):
            log.warning("untrained Q_D (smoke run): the caps are meaningless")
            vm = ValueModel.from_lm(lm_cfg, plain_container(cfg.get("value_config") or {})).to(device)
        else:
            raise ConfigError("decoding.rectify=true needs value_model_path=<dir saved by scripts/train.py> "
                              "(or decoding=plain / decoding.rectify=false for the plain baseline)")
        vm.to(resolve_dtype(dec.dtype, device, "Q_D dtype"))  # before sharing: never recasts the generator
    return vm


def build_generator(cfg: Any) -> Any:
    """The local sampler, or the remote one (rectify.remote) when ``lm.source`` is ``openai``."""
    if cfg.lm.get("source") == "openai":
        from rectify.remote.sampler import build_remote_sampler

        dec = DecodingConfig.from_any(cfg.decoding)
        device = resolve_device(cfg.get("device", "auto"))
        return build_remote_sampler(cfg, load_value_model(cfg, dec, cfg.get("generator_override") or {}, device))
    return build_sampler(cfg)


def _generation(res: GenerationResult, row: int) -> dict[str, Any]:
    """One generation's line entry; a rectified run adds its dead-end and step counts (evaluate.py's per-subset
    dead-end rate)."""
    if not res.steps_per_row:
        return {"text": res.texts[row]}
    return {"text": res.texts[row], "dead_end_fallbacks": res.dead_ends_per_row[row], "steps": res.steps_per_row[row]}


def run_generation(cfg: Any) -> dict[str, Any]:
    """Generate for every prompt not yet in ``cfg.output_path``; returns the metadata written. One writer at a
    time: a second process on the same output is refused (:func:`exclusive_writer`)."""
    out_path = Path(cfg.output_path)
    with exclusive_writer(out_path):
        return _generate_missing(cfg, out_path)


def _generate_missing(cfg: Any, out_path: Path) -> dict[str, Any]:
    meta_path = out_path.with_name(out_path.name + ".meta.json")
    every = read_prompts(cfg.prompts_path)
    limit = cfg.get("limit")
    records = every if limit is None else every[: int(limit)]
    if not records:
        raise PromptFileError(f"{cfg.prompts_path} gives no prompts" + (f" (limit={limit})" if limit is not None else ""))
    done = prepare_resume(out_path)
    if done > len(records):
        asked = (f"limit={limit} keeps only {len(records)} prompts of {cfg.prompts_path}: it cannot shrink a run "
                 "already drawn (pass a new output_path)" if done <= len(every) else
                 f"{cfg.prompts_path} gives only {len(records)} prompts: is it the output of another prompt file?")
        raise ResumeRefused(f"{out_path} already has {done} lines but {asked}")
    meta: dict[str, Any] = {"counts": {"prompts": 0, "row_steps": 0, "dead_ends": 0, "outside_support": 0},
                            "seconds": 0.0}
    config = plain_container(cfg)
    if done and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        conflicts = (resume_conflicts(meta.get("config") or {}, config, meta.get("input_digests"))
                     if meta.get("config") else [])
        if conflicts:
            raise ResumeRefused(f"{out_path} holds {done} prompts generated with another config ("
                             + "; ".join(conflicts[:6]) + ("; ..." if len(conflicts) > 6 else "")
                             + "): resuming would mix two runs. Pass a new output_path, or delete it and "
                             f"{meta_path.name} to start over")
    meta["config"] = config
    if not done or "input_digests" not in meta:
        meta["input_digests"] = input_digests(config)
    if not done:
        # in the sidecar: .hydra/overrides.yaml is rewritten by any later run that goes ahead in the run dir
        meta["overrides"] = command_overrides()
    meta["counts"]["prompts"] = done
    todo = records[done:]
    if not todo:
        log.info("%s already complete (%d prompts)", out_path, done)
        write_json_atomic(meta_path, meta)
        return meta
    sampler = build_generator(cfg)
    meta["shared_backbone"] = sampler.shared
    bs = int(cfg.batch_size)
    seed = int(cfg.seed)
    with JsonlAppender(out_path) as writer, tqdm(total=len(records), initial=done, desc="generate",
                                                 unit="prompt") as bar:
        for start in range(0, len(todo), bs):
            batch = todo[start: start + bs]
            first = done + start
            t0 = time.perf_counter()
            res = sampler.generate([r["prompt"]["text"] for r in batch], seeds=[seed + first + i for i in
                                                                              range(len(batch))])
            k = res.num_return_sequences
            for i, rec in enumerate(batch):
                writer.write(rec | {"generations": [_generation(res, j) for j in range(i * k, (i + 1) * k)]})
            c = meta["counts"]
            c["prompts"] += len(batch)
            c["row_steps"] += res.row_steps
            c["dead_ends"] += res.dead_ends
            c["outside_support"] += res.outside_support
            for key, value in res.stats.items():  # the remote generator's dropped mass, retries, ...
                c[key] = c.get(key, 0) + value
            meta["seconds"] = meta.get("seconds", 0.0) + time.perf_counter() - t0
            write_json_atomic(meta_path, meta)
            bar.update(len(batch))
    log.info("wrote %s (%d prompts; dead-end fallbacks %d of %d token steps)", out_path,
             meta["counts"]["prompts"], meta["counts"]["dead_ends"], meta["counts"]["row_steps"])
    return meta
