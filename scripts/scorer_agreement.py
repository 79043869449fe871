"""Agreement of the evaluation scorers with the labeller on one generations file:
`python scripts/scorer_agreement.py input=<generations.jsonl>` (see configs/scorer_agreement.yaml)."""

from __future__ import annotations

from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rectify.analysis.agreement import agreement_rows, clean_floors
from rectify.evaluation.cache import cache_dir_for, cached_scores
from rectify.evaluation.generations import read_generations
from rectify.report.table import fmt, format_markdown
from rectify.scoring import build_scorer


@hydra.main(version_base="1.3", config_path="../configs", config_name="scorer_agreement")
def main(cfg: DictConfig) -> None:
    path = Path(cfg.input)
    _, texts, _ = read_generations(path).flat()
    cache = Path(cfg.scores_dir) if cfg.scores_dir else cache_dir_for(path)
    scores = {name: np.array(cached_scores(cache / f"{name}.json", texts, path)) for name in cfg.scorers}
    node = cfg.reference  # a configs/scorer node, or just a scorer name (reference=profanity_svm)
    reference = build_scorer(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node)
    nonempty = [i for i, t in enumerate(texts) if t.strip()]  # empty generations score 0, as in evaluate.py
    ref = np.zeros(len(texts))
    ref[nonempty] = reference([texts[i] for i in nonempty])
    rows = agreement_rows(scores, ref, float(cfg.threshold))
    floors = clean_floors(scores, ref, int(cfg.k), float(cfg.threshold))
    rows = [{**r, **floors[r["scorer"]]} for r in rows]
    out = Path(cfg.paths.output_dir)
    pd.DataFrame(rows).to_csv(out / "agreement.csv", index=False)
    cols = list(rows[0]) if rows else []
    markdown = format_markdown(rows, [(c, lambda r, c=c: fmt(r[c])) for c in cols])
    head = (f"input: {path} ({len(texts)} samples); reference: {getattr(reference, 'name', 'reference')}, "
            f"{int((ref >= cfg.threshold).sum())} flagged")
    (out / "agreement.md").write_text(f"{head}\n\n{markdown}\n", encoding="utf-8")
    print(f"{head}\n\n{markdown}\nwritten: {out / 'agreement.csv'}")


if __name__ == "__main__":
    main()
