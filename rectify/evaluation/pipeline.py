"""Evaluate one generations file: score every generation with each scorer (cached), judge fluency
(cached), and summarise into results rows carrying the run's metadata (method, epsilon, overrides)."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rectify.errors import InputError
from rectify.evaluation.cache import all_cached, cache_dir_for, cached_values
from rectify.evaluation.generations import GenerationSet, flatten, read_generations, read_meta, read_overrides
from rectify.evaluation.perplexity import ContinuationNLL, continuation_nll
from rectify.evaluation.summary import SummaryConfig, summarize

log = logging.getLogger(__name__)


class Lazy:
    """Build an expensive object (a scorer, the judge LM) only when a cache miss needs it."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory = factory
        self._obj: Any = None
        self.built = False

    def get(self) -> Any:
        if not self.built:
            self._obj = self._factory()
            self.built = True
        return self._obj


@dataclass
class ScorerSpec:
    name: str
    fingerprint: str  # changes when the scorer config changes: invalidates the cache
    scorer: Lazy  # -> callable texts -> np.ndarray


@dataclass
class JudgeSpec:
    name: str
    fingerprint: str
    lm: Lazy  # -> (model, tokenizer)
    batch_size: int = 8
    max_length: int | None = None
    cached_only: bool = False  # eval.perplexity=false: report perplexities already cached, compute none


@dataclass
class EvalOptions:
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    empty_score: float | None = 0.0  # score given to empty generations; None = ask the scorer
    cache: bool = True
    cache_dir: str | None = None  # None: beside the input
    progress: bool = True
    perplexity_samples: int | None = None  # judge only the first m generations of each prompt (speed)


_ABSENT = object()


def _lookup(flat: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A metadata value by exact key, else by the shortest key ending in ``.name`` (``default`` when none)."""
    if name in flat:
        return flat[name]
    hits = sorted((k for k in flat if k.endswith("." + name)), key=len)
    return flat[hits[0]] if hits else default


def _recorded(name: str, *sources: Mapping[str, Any]) -> Any:
    """``name`` from the first source that holds it (see :func:`_lookup`), None when none does."""
    for src in sources:
        value = _lookup(src, name, _ABSENT)
        if value is not _ABSENT:
            return value
    return None


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool) or v is None:
        return v
    s = str(v).strip().lower()
    return {"true": True, "false": False, "1": True, "0": False}.get(s)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def qd_metadata(value_model_path: str | Path | None) -> dict[str, Any]:
    """What a report needs to tell Q_D variants apart, read from a ``ValueModel.save_pretrained`` dir: its
    backbone depth (``qd.layers``), its ``value_config.json`` (``qd.gamma``, ...) and the Hydra overrides of
    the training run that exported it (``qd.override.*``). Missing pieces are skipped."""
    if not value_model_path:
        return {}
    d = Path(str(value_model_path))
    if not d.is_dir():
        return {}
    out: dict[str, Any] = {}
    try:
        bb = json.loads((d / "backbone" / "config.json").read_text(encoding="utf-8"))
        bb = bb.get("text_config", bb)
        layers = bb.get("num_hidden_layers", bb.get("n_layer"))
        if layers is not None:
            out["qd.layers"] = layers
    except (OSError, json.JSONDecodeError):
        pass
    try:
        vc = json.loads((d / "value_config.json").read_text(encoding="utf-8"))
        out.update({f"qd.{k}": v for k, v in flatten(vc).items()})
    except (OSError, json.JSONDecodeError):
        pass
    out.update({f"qd.override.{k}": v for k, v in read_overrides(d / "value_config.json").items()})
    return out


def describe_run(meta: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Method / epsilon plus every metadata, override and Q_D key (prefixed ``meta.`` / ``override.`` /
    ``qd.``) so a report can find what was swept. Works with ``scripts/generate.py``'s sidecar
    (``config.decoding.{rectify,epsilon}``, ``config.value_model_path``) and with flat keys. The sidecar wins:
    it was written with the generations, while a later (even refused) run in the same run dir rewrites the
    overrides."""
    flat = flatten(meta)
    method = _lookup(flat, "method")
    rectify = _as_bool(_recorded("rectify", flat, overrides))
    epsilon = _as_float(_recorded("epsilon", flat, overrides))
    if method is None:
        if rectify is False:
            method = "plain"
        elif rectify is True or not math.isnan(epsilon):
            method = "rectified"
        else:
            method = "unknown"
    if str(method) == "plain":
        epsilon = math.nan  # the baseline has no cap; whatever epsilon the config held is irrelevant
    out: dict[str, Any] = {"method": str(method), "epsilon": epsilon}
    out.update({f"meta.{k}": v for k, v in flat.items()})
    out.update({f"override.{k}": v for k, v in overrides.items()})
    if str(method) != "plain":
        out.update(qd_metadata(_recorded("value_model_path", flat, overrides)))
    return out


def _meta_counts(meta: Mapping[str, Any]) -> tuple[float, float] | None:
    """(dead-end fallbacks, token steps) from the sidecar: ``dead_end_fallbacks``/``steps`` or
    generate.py's ``counts.dead_ends``/``counts.row_steps``."""
    flat = flatten(meta)
    fb = _lookup(flat, "dead_end_fallbacks")
    fb = _lookup(flat, "dead_ends") if fb is None else fb
    steps = _lookup(flat, "steps")
    steps = _lookup(flat, "row_steps") if steps is None else steps
    if fb is None or steps is None:
        return None
    return _as_float(fb), _as_float(steps)


class ScorerOutputError(InputError, ValueError):
    """A scorer (often a custom ``eval.scorers`` judge) returned something that is not P(toxic) in [0, 1]."""


PROBABILITY_SLACK = 1e-6  # a sigmoid's float overshoot (1.0000001) is rounding, not a wrong scale


def checked_probabilities(name: str, values: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """``values`` clipped to [0, 1] when every one is finite and within :data:`PROBABILITY_SLACK` of it. Anything
    else (logits, a 0..10 scale, NaN) would silently turn EMT and toxicity probability into nonsense, so it
    raises, naming the scorer and the first offending value."""
    ok = np.isfinite(values) & (values >= -PROBABILITY_SLACK) & (values <= 1.0 + PROBABILITY_SLACK)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise ScorerOutputError(
            f"scorer {name!r} returned {bad.size} of {values.size} scores that are not finite or outside [0, 1] "
            f"(e.g. index {bad[0]}: {float(values[bad[0]])} for {texts[bad[0]][:60]!r}); a scorer or custom judge "
            "must return P(toxic) in [0, 1] for every text (apply a sigmoid or softmax to logits)")
    return np.clip(values, 0.0, 1.0)


def score_generations(gs: GenerationSet, spec: ScorerSpec, opts: EvalOptions) -> np.ndarray:
    """P(toxic) of every generation (flat, file order), reusing cached scores."""
    _, texts, _ = gs.flat()
    cache_file = cache_dir_for(gs.path, opts.cache_dir) / f"{spec.name}.json" if opts.cache else None
    empty = [not t.strip() for t in texts]
    ask = [t for t, e in zip(texts, empty, strict=True) if not (e and opts.empty_score is not None)]

    def compute(missing: list[str]) -> list[float]:
        log.info("scoring %d texts of %s with %s", len(missing), gs.path.name, spec.name)
        values = np.asarray(spec.scorer.get()(missing), dtype=np.float64)
        if values.shape != (len(missing),):
            raise RuntimeError(f"scorer {spec.name} returned {values.shape} values for {len(missing)} texts")
        return checked_probabilities(spec.name, values, missing).tolist()

    got = iter(cached_values(cache_file, spec.fingerprint, ask, compute))
    return np.array([opts.empty_score if (e and opts.empty_score is not None) else next(got) for e in empty])


JUDGE_KEY_SEP = "\x00"   # the fluency judge's cache keys: prompt + NUL + continuation


def judged_positions(prompt_index: Sequence[int], per_prompt: int | None) -> list[int]:
    """Positions (in :meth:`GenerationSet.flat` order) of the generations the judge scores: each prompt's first
    ``per_prompt`` (``eval.perplexity_samples``), or all of them when None."""
    seen: dict[int, int] = {}
    chosen = []
    for j, i in enumerate(prompt_index):
        seen[i] = seen.get(i, 0) + 1
        if per_prompt is None or seen[i] <= per_prompt:
            chosen.append(j)
    return chosen


def judge_generations(gs: GenerationSet, spec: JudgeSpec, opts: EvalOptions) -> ContinuationNLL | None:
    """Continuation nll of every generation under the judge LM, reusing cached values. With
    ``opts.perplexity_samples = m`` only each prompt's first m generations are judged (the others get
    0 nll over 0 tokens, so they drop out of the token-weighted perplexity). A ``cached_only`` judge never
    loads: None unless every value is cached (a fast re-evaluation keeps the perplexity an earlier one paid for)."""
    prompts, texts, idx = gs.flat()
    chosen = judged_positions(idx, opts.perplexity_samples)
    keys = [prompts[j] + JUDGE_KEY_SEP + texts[j] for j in chosen]
    cache_file = cache_dir_for(gs.path, opts.cache_dir) / f"judge-{spec.name}-{spec.fingerprint[:8]}.json" if opts.cache else None

    def compute(missing: list[str]) -> list[list[float]]:
        model, tok = spec.lm.get()
        pairs = [k.split(JUDGE_KEY_SEP, 1) for k in missing]
        res = continuation_nll(model, tok, [p for p, _ in pairs], [c for _, c in pairs], batch_size=spec.batch_size,
                               max_length=spec.max_length, progress=opts.progress, desc=f"perplexity ({spec.name})")
        return [[float(s), int(n)] for s, n in zip(res.nll_sum, res.n_tokens, strict=True)]

    values = (all_cached(cache_file, spec.fingerprint, keys) if spec.cached_only else
              cached_values(cache_file, spec.fingerprint, keys, compute))
    if values is None:
        return None
    nll_sum, n_tokens = np.zeros(len(texts), dtype=np.float64), np.zeros(len(texts), dtype=np.int64)
    for j, (s, n) in zip(chosen, values, strict=True):
        nll_sum[j], n_tokens[j] = s, n
    return ContinuationNLL(nll_sum=nll_sum, n_tokens=n_tokens)


def evaluate_file(
    path: str | Path,
    scorers: list[ScorerSpec],
    judge: JudgeSpec | None = None,
    opts: EvalOptions | None = None,
) -> list[dict[str, Any]]:
    """Results rows for one generations file (see :func:`rectify.evaluation.summary.summarize`)."""
    opts = opts or EvalOptions()
    if not scorers:
        raise ValueError("evaluation needs at least one scorer")
    gs = read_generations(path)
    meta, overrides = read_meta(path), read_overrides(path)
    scores = {s.name: score_generations(gs, s, opts) for s in scorers}
    nll = judge_generations(gs, judge, opts) if judge is not None else None
    rows = summarize(gs, scores, nll, opts.summary, meta_counts=_meta_counts(meta))
    run = describe_run(meta, overrides)
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    head = {"input": str(Path(path).resolve()), "evaluated_at": stamp, "judge": judge.name if nll is not None else None,
            "ppl_samples_per_prompt": opts.perplexity_samples if nll is not None else None}
    return [{**head, "method": run["method"], "epsilon": run["epsilon"], **row,
             **{k: v for k, v in run.items() if k not in ("method", "epsilon")}} for row in rows]


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def write_rows(rows: list[dict[str, Any]], json_path: Path, csv_path: Path | None = None, extra: dict | None = None) -> None:
    """Results as JSON (``{"rows": [...], ...extra}``; NaN -> null) and CSV (one row per scorer x subset)."""
    import pandas as pd

    json_path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    json_path.write_text(json.dumps({"rows": clean, **(extra or {})}, indent=1, default=str) + "\n", encoding="utf-8")
    if csv_path is not None:
        pd.DataFrame(rows).to_csv(csv_path, index=False)


def results_paths(input_path: Path) -> tuple[Path, Path]:
    """Where the results of one generations file go beside it: ``<stem>.eval.json`` / ``.eval.csv``."""
    stem = input_path.name[: -len(".jsonl")] if input_path.name.endswith(".jsonl") else input_path.stem
    return input_path.with_name(f"{stem}.eval.json"), input_path.with_name(f"{stem}.eval.csv")
