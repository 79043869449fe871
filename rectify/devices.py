"""A CUDA setting on a machine without CUDA is a config error naming the fix, raised before any model loads
(torch asserts "not compiled with CUDA" from the first ``.to()``, Lightning says "No supported gpu backend")."""

from __future__ import annotations

import torch

from rectify.errors import ConfigError

GPU_ACCELERATORS = ("gpu", "cuda")


def require_cuda(setting: str, fix: str) -> None:
    """Raise :class:`ConfigError` for ``setting`` (e.g. ``device=cuda``) when torch sees no CUDA GPU."""
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting} but no CUDA GPU is visible to torch {torch.__version__}: {fix}")


def require_accelerator(accelerator: str | None, setting: str = "trainer.accelerator") -> None:
    """A Lightning accelerator this machine has (``gpu`` / ``cuda`` need CUDA; ``cpu`` and ``auto`` always run)."""
    if accelerator in GPU_ACCELERATORS:
        require_cuda(f"{setting}={accelerator} (trainer=gpu / ddp)", "use trainer=cpu (the default)")
