"""Agreement of the evaluation scorers with the labeller on one generations file:
`python scripts/analysis/scorer_agreement.py input=<generations.jsonl>` (see configs/scorer_agreement.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rectify.analysis.agreement import agreement_rows, clean_floors
from rectify.evaluation.cache import cached_scores_by_scorer
from rectify.evaluation.generations import read_generations
from rectify.report.table import write_table
from rectify.scoring import build_scorer


@hydra.main(version_base="1.3", config_path="../../configs", config_name="scorer_agreement")
def main(cfg: DictConfig) -> None:
    path = Path(cfg.input)
    _, texts, _ = read_generations(path).flat()
    scores = {name: np.array(v) for name, v in cached_scores_by_scorer(path, texts, cfg.scorers, cfg.scores_dir).items()}
    node = cfg.reference  # a configs/scorer node, or just a scorer name (reference=profanity_svm)
    reference = build_scorer(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    nonempty = [i for i, t in enumerate(texts) if t.strip()]  # empty generations score 0, as in evaluate.py
    ref = np.zeros(len(texts))
    ref[nonempty] = reference([texts[i] for i in nonempty])
    rows = agreement_rows(scores, ref, float(cfg.threshold))
    floors = clean_floors(scores, ref, int(cfg.k), float(cfg.threshold))
    rows = [{**r, **floors[r["scorer"]]} for r in rows]
    head = (f"input: {path} ({len(texts)} samples); reference: {getattr(reference, 'name', 'reference')}, "
            f"{int((ref >= cfg.threshold).sum())} flagged")
    out = Path(cfg.paths.output_dir)
    markdown = write_table(rows, out, "agreement", head=head)
    print(f"{head}\n\n{markdown}\nwritten: {out / 'agreement.csv'}")

if __name__ == "__main__":
    main()
