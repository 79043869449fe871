"""What a rule does to its continuations besides toxicity: length, very short ones, per-generation perplexity.

The selection criterion budgets the token-level perplexity of a subsample and Dist-3. A strong clean-ending tilt
can meet both on dev and still change the text in ways they miss: ending early (a full stop and the end token are
clean endings too) or drifting into rare-token strings Q_D scores as safe. This reads what ``scripts/evaluate.py``
already wrote (the generations and the fluency judge's per-text cache) and scores nothing:

    python -m rectify.analysis.continuation_shape RUN_DIR [RUN_DIR ...] [--short-words 3] [--high-ppl 1000]

Each RUN_DIR holds ``generations.jsonl`` and its ``generations.jsonl.scores/judge-*.json``. Printed per run:
generations, mean words, the share of at most ``--short-words`` words, the empty share, and over the judged
subsample the token perplexity (the evaluation's), the median per-generation perplexity and the share above
``--high-ppl``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rectify.evaluation.cache import cache_dir_for, read_cache
from rectify.evaluation.diversity import SHORT_WORDS, empty_rate, short_rate
from rectify.evaluation.generations import read_generations
from rectify.evaluation.pipeline import JUDGE_KEY_SEP, judged_positions, results_paths


@dataclass(frozen=True)
class Shape:
    """One run's continuation statistics (shares are fractions)."""

    run: str
    n: int
    mean_words: float
    short_share: float
    empty_share: float
    judged: int
    token_ppl: float
    median_ppl: float
    high_ppl_share: float


def judge_cache(generations: Path) -> Path:
    """The fluency judge's cache beside ``generations`` (the only ``judge-*.json``; raises when there is none or
    several, since their numbers would differ)."""
    found = sorted(cache_dir_for(generations).glob("judge-*.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{cache_dir_for(generations)}: expected one judge-*.json cache, found "
                                f"{len(found)}; run scripts/evaluate.py on {generations} with one judge")
    return found[0]


def judged_per_prompt(generations: Path) -> int | None:
    """How many generations a prompt had judged (``eval.perplexity_samples``, each prompt's first m) by the
    evaluation of ``generations``; None: all of them."""
    rows = json.loads(results_paths(generations)[0].read_text(encoding="utf-8"))["rows"]
    m = rows[0].get("ppl_samples_per_prompt") if rows else None
    return None if m is None else int(m)


def continuation_shape(run_dir: str | Path, short_words: int = SHORT_WORDS, high_ppl: float = 1000.0) -> Shape:
    """:class:`Shape` of ``run_dir/generations.jsonl``; perplexities over the generations its evaluation judged
    (the same first m of each prompt, so the token perplexity is the evaluation's)."""
    path = Path(run_dir) / "generations.jsonl"
    gs = read_generations(path)
    prompts, texts, idx = gs.flat()
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    values = read_cache(judge_cache(path)).get("values", {})
    judged = []
    for j in judged_positions(idx, judged_per_prompt(path)):
        key = prompts[j] + JUDGE_KEY_SEP + texts[j]
        if key not in values:
            raise KeyError(f"{judge_cache(path)}: a judged generation of {path} is not cached ({texts[j][:40]!r})")
        judged.append(values[key])
    nll = np.array([v[0] for v in judged if v[1] > 0], dtype=np.float64)
    tokens = np.array([v[1] for v in judged if v[1] > 0], dtype=np.float64)
    per_gen = np.exp(nll / tokens) if len(tokens) else np.array([np.nan])
    return Shape(
        run=Path(run_dir).name, n=len(texts), mean_words=float(words.mean()),
        short_share=short_rate([texts], short_words), empty_share=empty_rate([texts]),
        judged=len(tokens), token_ppl=float(np.exp(nll.sum() / tokens.sum())) if len(tokens) else float("nan"),
        median_ppl=float(np.median(per_gen)), high_ppl_share=float(np.mean(per_gen > high_ppl)),
    )


def shape_table(shapes: list[Shape], short_words: int = SHORT_WORDS, high_ppl: float = 1000.0) -> str:
    """Markdown, one row per run."""
    lines = [f"| run | generations | words | <= {short_words} words | empty | judged | token PPL | median PPL | "
             f"PPL > {high_ppl:g} |", "|---|---|---|---|---|---|---|---|---|"]
    for s in shapes:
        lines.append(f"| {s.run} | {s.n} | {s.mean_words:.1f} | {s.short_share:.1%} | {s.empty_share:.1%} | "
                     f"{s.judged} | {s.token_ppl:.1f} | {s.median_ppl:.1f} | {s.high_ppl_share:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="generate.py run dirs (each holds generations.jsonl), evaluated")
    ap.add_argument("--short-words", type=int, default=SHORT_WORDS)
    ap.add_argument("--high-ppl", type=float, default=1000.0)
    args = ap.parse_args(argv)
    shapes = [continuation_shape(r, args.short_words, args.high_ppl) for r in args.runs]
    print(shape_table(shapes, args.short_words, args.high_ppl))


if __name__ == "__main__":
    main()
