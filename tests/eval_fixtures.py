"""Synthetic evaluated generation runs: ``<root>/<run>/generations.eval.json`` rows as scripts/evaluate.py writes
them, the ``.meta.json`` sidecar and the Hydra overrides of generate.py (in ``run/.hydra`` as the demo lays
them out), for the select stage, the demo summary and the demo flow tests."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml


def write_run(root: Path, name: str, scores: Mapping[str, tuple[float, float]], *, ppl: float, dist3: float = 0.8,
              overrides: Sequence[str] = (), n_prompts: int = 20, k: int = 4, subsets: Sequence[str] = ("nontoxic",),
              evaluated_at: str = "2026-01-01T00:00:00+00:00", short_rate: float | None = None) -> Path:
    """One run under ``root/name``: per scorer (Toxicity Probability, EMT), one perplexity and Dist-3 for all; CIs
    are +-0.05 around each value (perplexity +-2). Returns the generations file's path."""
    d = root / name
    (d / "run" / ".hydra").mkdir(parents=True, exist_ok=True)
    gen = d / "generations.jsonl"
    gen.write_text("")
    method = "plain" if any(o == "decoding=plain" for o in overrides) or not overrides else "rectified"
    eps = next((float(o.split("=", 1)[1]) for o in overrides if o.startswith("decoding.epsilon=")), None)
    (d / "generations.jsonl.meta.json").write_text(json.dumps(
        {"config": {"decoding": {"rectify": method != "plain", "epsilon": eps}}}))
    (d / "run" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(
        ["prompts_path=data/demo/prompts_dev.jsonl", "limit=20", "batch_size=8", "decoding.num_return_sequences=4",
         *overrides, f"output_path={gen}", f"hydra.run.dir={d}/run"]))
    write_eval(gen, scores, ppl=ppl, dist3=dist3, method=method, eps=eps, n_prompts=n_prompts, k=k, subsets=subsets,
               evaluated_at=evaluated_at, short_rate=short_rate)
    return gen


def write_eval(gen: Path, scores: Mapping[str, tuple[float, float]], *, ppl: float, dist3: float = 0.8,
               method: str = "rectified", eps: float | None = None, n_prompts: int = 20, k: int = 4,
               subsets: Sequence[str] = ("nontoxic",), evaluated_at: str = "2026-01-01T00:00:00+00:00",
               short_rate: float | None = None) -> None:
    """``<gen stem>.eval.json`` beside a generations file, one row per scorer and subset (``short_rate`` only when
    given: files evaluated before it existed have none)."""
    rows = []
    for subset in subsets:
        for scorer, (tox, emt) in scores.items():
            rows.append({
                "input": str(gen.resolve()), "evaluated_at": evaluated_at, "judge": "gemma-3-270m", "scorer": scorer,
                "subset": subset, "method": method, "epsilon": eps, "n_prompts": n_prompts, "k": k,
                "n_generations": n_prompts * k, "tox_prob": tox, "tox_prob_ci_low": max(tox - 0.05, 0),
                "tox_prob_ci_high": tox + 0.05, "emt": emt, "emt_std": 0.1, "emt_ci_low": emt - 0.05,
                "emt_ci_high": emt + 0.05, "ppl": ppl, "ppl_ci_low": ppl - 2, "ppl_ci_high": ppl + 2,
                "dist1": 0.5, "dist2": 0.7, "dist3": dist3, "meta.config.decoding.rectify": method != "plain",
                "meta.config.decoding.epsilon": eps, **({} if short_rate is None else {"short_rate": short_rate}),
            })
    (gen.parent / "generations.eval.json").write_text(json.dumps({"rows": rows}))


JUDGES = ("profanity_svm", "jigsaw_lstm_tcc", "hatesonar")


def dev_sweep(root: Path) -> None:
    """plain and four candidates: the best cut is over the PPL budget, the chosen one cuts 50% at +10%."""
    write_run(root, "plain", {j: (0.40, 0.30) for j in JUDGES}, ppl=50.0, overrides=["decoding=plain"])
    rect = ["decoding=rectified", "value_model_path=outputs/demo/train/value_model"]
    write_run(root, "eps_0.1", {"profanity_svm": (0.30, 0.25), "jigsaw_lstm_tcc": (0.30, 0.25), "hatesonar": (0.4, .3)},
              ppl=52.0, overrides=[*rect, "decoding.epsilon=0.1"])  # cut 25% at +4%
    write_run(root, "q4_eps_0.05", {"profanity_svm": (0.20, 0.2), "jigsaw_lstm_tcc": (0.20, 0.2), "hatesonar": (0.1, .1)},
              ppl=55.0, overrides=[*rect, "decoding.epsilon=0.05", "decoding.q_scale=4"])  # cut 50% at +10%
    write_run(root, "q8_eps_0.05", {"profanity_svm": (0.04, 0.1), "jigsaw_lstm_tcc": (0.04, 0.1), "hatesonar": (0.0, 0)},
              ppl=70.0, overrides=[*rect, "decoding.epsilon=0.05", "decoding.q_scale=8"])  # cut 90% at +40%
    write_run(root, "eps_0.3", {"profanity_svm": (0.20, 0.2), "jigsaw_lstm_tcc": (0.20, 0.2), "hatesonar": (0.4, .3)},
              ppl=55.0, dist3=0.70, overrides=[*rect, "decoding.epsilon=0.3"])  # cut 50% but Dist-3 -0.10
