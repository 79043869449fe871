"""Process-level CPU settings the decoding loop needs to run at memory speed.

Each rectified step builds a few dozen ``[rows, vocabulary]`` float32 tensors (200 x 49152 = 39 MB each). glibc
serves every allocation that large with a fresh ``mmap`` and returns it on free, so each one page-faults and
zeroes 39 MB again: measured here, a 4.5 ms multiply took 15.6 ms that way. Keeping large blocks in the heap
(no per-allocation mmap, no trimming) lets the next step reuse them. The price: the process keeps its peak heap
until it exits. ``RECTIFY_MALLOC=default`` leaves glibc as it is; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h>
ENV = "RECTIFY_MALLOC"
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse (once per process); True when it is in effect."""
    if "done" in _state:
        return _state["done"]
    ok = False
    if os.environ.get(ENV, "keep") != "default" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            ok = False
    _state["done"] = ok
    log.debug("large CPU buffers kept for reuse: %s (%s=default turns this off)", ok, ENV)
    return ok
