"""The oracle-reranker bound on EMT: `python scripts/analysis/best_of_n.py input=<plain generations, n per prompt>`
(rectify.analysis.best_of_n; configs/best_of_n.yaml). Scores come from the cache evaluate.py wrote."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from rectify.analysis.best_of_n import best_of_n
from rectify.evaluation.cache import cached_scores_by_scorer
from rectify.evaluation.generations import read_generations
from rectify.evaluation.summary import SUBSETS, group_flat, subset_indices
from rectify.report.table import write_table


@hydra.main(version_base="1.3", config_path="../../configs", config_name="best_of_n")
def main(cfg: DictConfig) -> None:
    path = Path(cfg.input)
    gs = read_generations(path)
    _, texts, _ = gs.flat()
    sizes = [len(g) for g in gs.generations]
    rows = []
    for name, scores in cached_scores_by_scorer(path, texts, cfg.scorers, cfg.scores_dir).items():
        per_prompt = group_flat(np.array(scores), sizes)
        for subset in SUBSETS:
            idx = subset_indices(gs.prompt_toxicity, subset, float(cfg.threshold))
            stats = best_of_n([per_prompt[i] for i in idx], int(cfg.k), float(cfg.threshold))
            rows.append({"scorer": name, "subset": subset, "n": int(max(sizes, default=0)), "k": int(cfg.k),
                         **stats, "emt_target": 0.7 * stats["emt_random"]})
    out = Path(cfg.paths.output_dir)
    markdown = write_table(rows, out, "best_of_n", head=f"input: {path}")
    print(f"input: {path}\n\n{markdown}\nwritten: {out / 'best_of_n.csv'}")

if __name__ == "__main__":
    main()
