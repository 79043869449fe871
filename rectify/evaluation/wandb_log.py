"""Optional wandb logging for evaluation and reports, driven by the shared ``logger`` config group.

Enabled when the composed config has a ``logger.wandb`` node (``logger=wandb``); the ``WANDB_MODE``
environment variable (online / offline / disabled) wins over the node's ``mode``. Tests run with
``WANDB_MODE=disabled``, where wandb.init returns a no-op run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def wandb_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """wandb.init keyword arguments from ``cfg.logger.wandb``, or None when wandb is off."""
    logger = cfg.get("logger") if isinstance(cfg, DictConfig) else None
    node = logger.get("wandb") if isinstance(logger, DictConfig) else None
    if node is None:
        return None
    node = OmegaConf.to_container(node, resolve=True)
    mode = os.environ.get("WANDB_MODE") or node.get("mode") or "offline"
    if mode == "disabled":
        return None
    save_dir = node.get("save_dir")
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    return {"project": node.get("project", "rectify"), "entity": node.get("entity"), "name": node.get("name"),
            "group": node.get("group"), "tags": list(node.get("tags") or []), "dir": save_dir, "mode": mode}


def _cell(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def _kind(v: Any) -> str:
    """A value's wandb column type: bool apart from int (wandb types them differently), int with float."""
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, (int, float)) else type(v).__name__


def table_data(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    """Table cells; a column whose non-missing values have several types (a paper run's config records
    ``calibration: false``, a plain run's ``"auto"``) is written as strings, since wandb.Table refuses such a
    column. Single-typed columns, numbers included, keep their values."""
    data = [[_cell(r.get(c)) for c in columns] for r in rows]
    for i in range(len(columns)):
        if len({_kind(row[i]) for row in data if row[i] is not None}) > 1:
            for row in data:
                row[i] = None if row[i] is None else str(row[i])
    return data


def row_summary(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("emt", "tox_prob", "ppl", "dist3")) -> dict[str, Any]:
    """``{"<scorer>/<subset>/<metric>": value}`` for one run's rows (wandb summary: one point per sweep run).
    Rows of several generations files (``eval.input=<sweep dir>``) get ``<run>/`` in front, the file's folder below
    their common one: one key per run, not the last run's numbers under every key."""
    inputs = list(dict.fromkeys(str(r.get("input") or "") for r in rows))
    root = os.path.commonpath([str(Path(i).parent) for i in inputs]) if len(inputs) > 1 and all(inputs) else None

    def prefix(r: Mapping[str, Any]) -> str:
        if root is None:
            return ""
        rel = Path(os.path.relpath(str(r["input"]), root))
        return f"{rel.parent.as_posix() if rel.parent != Path('.') else rel.stem}/"

    return {f"{prefix(r)}{r['scorer']}/{r['subset']}/{m}": r.get(m) for r in rows for m in metrics}


def log_results(cfg: DictConfig, rows: Sequence[Mapping[str, Any]], key: str, images: Mapping[str, Path] | None = None,
                summary: Mapping[str, Any] | None = None, scatter: tuple[str, str] | None = None) -> bool:
    """Log rows as a wandb Table (plus images, summary values, and a native scatter plot of two columns);
    returns whether anything was logged."""
    settings = wandb_settings(cfg)
    if settings is None or not rows:
        return False
    import wandb

    columns = list(dict.fromkeys(k for r in rows for k in r))
    run = wandb.init(config=OmegaConf.to_container(cfg, resolve=False), reinit="finish_previous", **settings)
    try:
        table = wandb.Table(columns=columns, data=table_data(rows, columns))
        payload: dict[str, Any] = {key: table}
        if scatter is not None:
            payload[f"{key}_{scatter[1]}_vs_{scatter[0]}"] = wandb.plot.scatter(table, scatter[0], scatter[1],
                                                                              title=f"{scatter[1]} vs {scatter[0]}")
        for name, path in (images or {}).items():
            payload[name] = wandb.Image(str(path))
        run.log(payload)
        for k, v in (summary or {}).items():
            run.summary[k] = _cell(v)
    finally:
        run.finish()
    return True
