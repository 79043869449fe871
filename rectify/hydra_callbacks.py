"""Hydra callbacks every script runs (configs/hydra/default.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rectify.errors import RunRefused

log = logging.getLogger(__name__)


class KeepRunConfigOnRefusal(Callback):
    """A run refused before writing anything (:class:`rectify.errors.RunRefused`: its output belongs to another
    run) leaves the run dir's ``.hydra/`` as it found it. Hydra writes the new command's config there before the
    script starts, so a refused resume in a reused ``hydra.run.dir`` would otherwise replace the record of the
    run whose outputs the dir holds with that of a run that never happened."""

    def __init__(self) -> None:
        self._folder: Path | None = None
        self._saved: dict[str, bytes] = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._folder, self._saved = None, {}
        sub = config.hydra.get("output_subdir")
        if sub is None:
            return
        folder = Path(str(config.hydra.run.dir)) / str(sub)  # hydra's ${now:} is cached: the job's own dir
        if folder.is_dir():
            self._folder = folder
            self._saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        refused = job_return.status == JobStatus.FAILED and isinstance(
            getattr(job_return, "_return_value", None), RunRefused)  # return_value would raise it
        if self._folder is None or not refused:
            return
        for path in self._folder.iterdir():
            if path.is_file() and path.name not in self._saved:
                path.unlink()
        for name, data in self._saved.items():
            (self._folder / name).write_bytes(data)
        log.info("run refused: %s keeps the config of the run that wrote this dir", self._folder)
