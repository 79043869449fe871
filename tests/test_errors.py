"""User-input errors end a script with their message (file:line, key), not a traceback through the library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rectify.assets import AssetError
from rectify.data.jsonl import JSONLError
from rectify.data.prompts import NoPromptsError
from rectify.data.stages import StageConfigMismatch
from rectify.decoding.io import OutputBusyError, PromptFileError, ResumeRefused
from rectify.decoding.sampler import VocabularyMismatch
from rectify.errors import ConfigError, InputError
from rectify.evaluation.generations import GenerationsFormatError
from rectify.lm import LMLoadError
from rectify.remote import RemoteAPIError
from rectify.report.gather import ReportError
from rectify.training.data import ValueDataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cls, base", [
    (PromptFileError, ValueError), (ResumeRefused, ValueError), (OutputBusyError, RuntimeError),
    (JSONLError, ValueError), (NoPromptsError, ValueError), (StageConfigMismatch, RuntimeError),
    (VocabularyMismatch, ValueError), (GenerationsFormatError, ValueError), (ReportError, ValueError),
    (ValueDataError, ValueError), (AssetError, RuntimeError), (LMLoadError, RuntimeError), (ConfigError, ValueError),
    (RemoteAPIError, RuntimeError),
])
def test_input_errors_keep_their_builtin_base(cls, base):
    """Library callers that catch ValueError / RuntimeError still catch them."""
    assert issubclass(cls, InputError) and issubclass(cls, base)
    with pytest.raises(base, match="where: what"):
        raise cls("where: what")


def test_a_bad_prompt_file_ends_with_its_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": {"text": "fine"}}\n{"prompt": \n')
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/generate.py"), "debug=smoke", f"prompts_path={bad}",
                           f"output_path={tmp_path / 'out.jsonl'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"{bad}:2: malformed JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unreachable_api_ends_with_its_message_not_a_traceback(tmp_path):
    """generate.py lm=openai_api against a port nothing listens on: one message after the retries."""
    import socket

    with socket.socket() as s:  # a free loopback port, closed again: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hello\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/generate.py"), "debug=smoke", "lm=openai_api",
                           f"lm.base_url=http://127.0.0.1:{port}/v1", "lm.max_retries=1", "lm.backoff_s=0.01",
                           f"prompts_path={prompts}", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}/v1/models failed 2 times" in proc.stderr and "Traceback" not in proc.stderr
