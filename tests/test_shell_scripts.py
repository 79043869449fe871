"""Every scripts/**/*.sh prints its header (how to call it) with --help and does nothing else (docs/analysis.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# preflight.sh is sourced by the analysis scripts, not run
SCRIPTS = sorted(p.relative_to(ROOT) for p in (ROOT / "scripts").rglob("*.sh") if p.name != "preflight.sh")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("script", SCRIPTS, ids=str)
def test_help_prints_usage_and_touches_nothing(tmp_path, script):
    repo = tmp_path / "repo"   # a copy: a script that ignores --help must not touch the real outputs/
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    (repo / "outputs" / "gpu_check").mkdir(parents=True)
    (repo / "outputs" / "gpu_check" / "keep").write_text("x")   # gpu_check.sh's output dir, deleted by a run
    before = _tree(repo)
    # PY / PYTHON `false`: a script that starts working anyway fails at once instead of training
    env = {**os.environ, "PY": "false", "PYTHON": "false"}
    res = subprocess.run(["bash", str(script), "--help"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert script.name in res.stdout, res.stdout   # the header shows how to call it
    assert _tree(repo) == before
