"""Pick the compute dtype by what the hardware does fast: ``dtype: auto`` / ``precision: auto``.

bf16 pays only where matrix products run natively in bf16: CUDA GPUs that support it, CPUs with AMX tiles
(``torch.cpu._is_amx_tile_supported()``) and CPUs with AVX512-BF16 dot products (e.g. AMD Zen 4, where a
576 x 1536 bf16 matmul runs ~2.5x faster than fp32). A CPU with neither runs bf16 *slower* than fp32 at small
batches, so everything else stays fp32. Only the weights and activations of the networks use this dtype:
softmax, warping, caps and the KL projection always run in fp32 or wider (see ``rectify.decoding``).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@functools.cache
def cpu_bf16_reason() -> str | None:
    """Why this CPU runs bf16 matmuls natively (``"amx"`` / ``"avx512_bf16"``), or None."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        return "amx"
    if "avx512_bf16" in _cpu_flags():
        return "avx512_bf16"
    return None


def bf16_native(device: str | torch.device | None = None) -> bool:
    """True when ``device`` (default: CUDA if present, else the CPU) computes fast in bf16."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return dev.type == "cpu" and cpu_bf16_reason() is not None


@functools.cache
def _announce(what: str, choice: str, reason: str) -> None:
    """Log each auto choice once per process (it is printed at the start of every script)."""
    log.info("%s: auto -> %s (%s)", what, choice, reason)


def _reason(device: str | torch.device | None) -> str:
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return "CUDA with bf16" if bf16_native(dev) else "CUDA without bf16"
    return f"CPU with {cpu_bf16_reason()}" if bf16_native(dev) else "CPU without AMX / AVX512-BF16"


def resolve_dtype(name: str | torch.dtype | None, device: str | torch.device | None = None,
                  what: str = "dtype") -> torch.dtype:
    """``"auto"`` -> bf16 where :func:`bf16_native`, else fp32; other names map as usual (None = fp32)."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return torch.float32
    if name == "auto":
        dtype = torch.bfloat16 if bf16_native(device) else torch.float32
        _announce(what, dtype_name(dtype), _reason(device))
        return dtype
    try:
        return DTYPES[name]
    except KeyError as exc:
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, bfloat16 or float16") from exc


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (for configs, fingerprints and benchmark rows)."""
    return str(dtype).removeprefix("torch.")


def resolve_precision(name: str | None, accelerator: str | None = None) -> str | None:
    """Lightning ``precision``: ``"auto"`` -> ``bf16-mixed`` where bf16 is native, else ``32-true``."""
    if name != "auto":
        return name
    device = "cuda" if accelerator in ("gpu", "cuda") else "cpu" if accelerator == "cpu" else None
    choice = "bf16-mixed" if bf16_native(device) else "32-true"
    _announce("trainer precision", choice, _reason(device))
    return choice
