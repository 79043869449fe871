"""What ``scripts/evaluate.py`` does, as a library function: build scorers and the judge from the Hydra
config, evaluate every generations file (a file or every match under a directory), write results."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from rectify.evaluation.cache import fingerprint
from rectify.evaluation.pipeline import (
    EvalOptions,
    JudgeSpec,
    Lazy,
    ScorerSpec,
    evaluate_file,
    results_paths,
    write_rows,
)
from rectify.evaluation.summary import SummaryConfig
from rectify.runtime import keep_freed_memory

log = logging.getLogger(__name__)


def find_inputs(input_path: str | Path | Sequence[str | Path], pattern: str) -> list[Path]:
    """The generations files to evaluate: the file itself, or ``pattern`` matches under a directory
    (skipping our own cache folders), sorted for a stable order; a list of files/directories is concatenated."""
    if not isinstance(input_path, (str, Path)):
        return list(dict.fromkeys(f for item in input_path for f in find_inputs(item, pattern)))
    p = Path(input_path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise FileNotFoundError(f"eval.input={input_path!s} is neither a file nor a directory")
    found = sorted(f for f in p.glob(pattern) if f.is_file() and not any(part.endswith(".scores") for part in f.parts))
    if not found:
        raise FileNotFoundError(f"no file matching {pattern!r} under {p}")
    return found


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def scorer_specs(cfg: DictConfig) -> list[ScorerSpec]:
    """One lazily built scorer per name in ``eval.scorers``: its config from ``scorers.<name>`` (composed
    from ``configs/scorer``), or just the name (``rectify.scoring.build_scorer`` knows the defaults)."""
    names = list(cfg.eval.scorers or [])
    if not names:
        raise ValueError("eval.scorers is empty: name at least one scorer (e.g. [profanity_svm])")
    composed = cfg.get("scorers") or {}
    specs = []
    for name in names:
        node = _container(composed[name]) if name in composed else name

        def factory(node=node):
            from rectify.scoring import build_scorer

            return build_scorer(node)

        specs.append(ScorerSpec(name=str(name), fingerprint=fingerprint(node), scorer=Lazy(factory)))
    return specs


def judge_name(judge_cfg: Mapping[str, Any]) -> str:
    """A short readable name for the judge LM (source or Hub name, + layers / random marker)."""
    name = judge_cfg.get("name_or_path") or judge_cfg.get("source") or "judge"
    name = Path(str(name)).name
    if judge_cfg.get("num_layers"):
        name += f"-L{judge_cfg['num_layers']}"
    if judge_cfg.get("random_init"):
        name += "-random"
    return name


def judge_device(name: str) -> str:
    """``auto``: the first GPU when there is one, else the CPU."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def judge_spec(cfg: DictConfig) -> JudgeSpec | None:
    """The fluency judge; with ``eval.perplexity=false`` one that only reads its cache and never loads."""
    judge_cfg = _container(cfg.judge)

    def factory():
        from rectify.lm import load_lm

        log.info("loading the fluency judge %s", judge_name(judge_cfg))
        model, tok = load_lm(judge_cfg)
        return model.to(judge_device(cfg.eval.get("judge_device", "auto"))).eval(), tok

    fp = fingerprint({"judge": judge_cfg, "max_length": cfg.eval.judge_max_length})
    return JudgeSpec(name=judge_name(judge_cfg), fingerprint=fp, lm=Lazy(factory),
                     batch_size=int(cfg.eval.judge_batch_size), max_length=cfg.eval.judge_max_length,
                     cached_only=not cfg.eval.perplexity)


def options(cfg: DictConfig) -> EvalOptions:
    e = cfg.eval
    summary = SummaryConfig(
        toxic_threshold=float(e.toxic_threshold), prompt_threshold=float(e.prompt_threshold),
        subsets=tuple(e.subsets), dist_denominator=str(e.dist_denominator), bootstrap_n=int(e.bootstrap.n),
        bootstrap_seed=int(e.bootstrap.seed), confidence=float(e.bootstrap.confidence),
    )
    m = e.get("perplexity_samples")
    return EvalOptions(summary=summary, empty_score=e.empty_score, cache=bool(e.cache), cache_dir=e.cache_dir,
                       progress=bool(e.progress), perplexity_samples=None if m is None else int(m))


def run_evaluation(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate every input; write per-input results beside it and all rows to ``eval.output_dir``."""
    keep_freed_memory()  # the judges' [batch, tokens, vocabulary] logits: reuse the buffers (rectify/runtime.py)
    inputs = find_inputs(_container(cfg.eval.input), cfg.eval.glob)
    scorers, judge, opts = scorer_specs(cfg), judge_spec(cfg), options(cfg)
    all_rows: list[dict[str, Any]] = []
    for path in tqdm(inputs, desc="evaluate", unit="file", disable=not opts.progress or len(inputs) < 2):
        log.info("evaluating %s", path)
        rows = evaluate_file(path, scorers, judge, opts)
        if cfg.eval.write_beside_input:
            try:
                write_rows(rows, *results_paths(path))
            except OSError as exc:  # a read-only sweep dir: results.json below still has every row
                log.warning("cannot write results beside %s (%s)", path, exc)
        all_rows.extend(rows)
    out = Path(cfg.eval.output_dir)
    write_rows(all_rows, out / "results.json", out / "results.csv",
               extra={"config": OmegaConf.to_container(cfg.eval, resolve=True)})
    return all_rows
