"""rectify.runtime.keep_freed_memory: in effect on glibc Linux, off with RECTIFY_MALLOC=default, once per process."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest


def probe(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RECTIFY_MALLOC"}
    if env_value is not None:
        env["RECTIFY_MALLOC"] = env_value
    code = ("from rectify.runtime import keep_freed_memory as k; import torch; a = k(); "
            "x = torch.ones(300, 49152); y = (x * 2).sum(); print(a, k(), float(y))")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True, timeout=120).stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_in_effect_on_glibc_and_large_tensors_still_compute():
    assert probe(None) == ["True", "True", str(float(2 * 300 * 49152))]


def test_default_leaves_the_allocator_alone():
    assert probe("default")[:2] == ["False", "False"]
