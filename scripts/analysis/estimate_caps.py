"""Estimate rectified toxicity and perplexity for a grid of cap rules from plain samples:
`python scripts/analysis/estimate_caps.py value_model_path=<Q_D dir>` (see configs/estimate_caps.yaml)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rectify.analysis.offpolicy import (
    from_generations,
    from_value_data,
    log_ratios,
    q_anatomy,
    rule_grid,
    summarize,
)
from rectify.errors import ConfigError
from rectify.evaluation.cache import cached_scores
from rectify.evaluation.generations import is_generations_file, read_generations
from rectify.lm import load_lm
from rectify.report.table import write_table
from rectify.training.data import read_value_jsonl
from rectify.value_model import ValueModel

log = logging.getLogger(__name__)


def load_trajectories(cfg: DictConfig, tokenizer) -> list:
    path = Path(cfg.input)
    if cfg.scores is None:  # value data: labels are the terminal rewards
        if is_generations_file(path):
            raise ConfigError(f"input={path} is a generations file: its samples need a judge's scores, "
                              "scores=<input>.scores/<judge>.json (written by scripts/evaluate.py); without scores= "
                              "the input is value data (text, reward)")
        records, _ = read_value_jsonl(path)
        return from_value_data(records, tokenizer, int(cfg.max_length), float(cfg.reward_threshold))
    prompts, texts, _ = read_generations(path).flat()
    scores = cached_scores(Path(cfg.scores), texts, path)
    return from_generations(prompts, texts, scores, tokenizer, float(cfg.toxic_threshold))


@hydra.main(version_base="1.3", config_path="../../configs", config_name="estimate_caps")
def main(cfg: DictConfig) -> None:
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    lm, tokenizer = load_lm(OmegaConf.merge(cfg.lm, cfg.get("generator_override") or {}))
    lm.eval()
    value_model = ValueModel.from_pretrained(cfg.value_model_path).eval()
    trajectories = load_trajectories(cfg, tokenizer)
    if cfg.limit:
        trajectories = trajectories[: int(cfg.limit)]
    rules = rule_grid(OmegaConf.to_container(cfg.grid, resolve=True), p_min=float(cfg.p_min))
    log.info("%d trajectories (%d toxic), %d rules", len(trajectories), sum(t.toxic for t in trajectories), len(rules))
    ratios = log_ratios(lm, value_model, trajectories, rules, temperature=float(cfg.temperature),
                        batch_size=int(cfg.batch_size))
    out = Path(cfg.paths.output_dir)
    anatomy = q_anatomy(ratios)
    (out / "q_anatomy.json").write_text(json.dumps(anatomy, indent=2), encoding="utf-8")
    q_line = ("Q per step, mean over trajectories: LM-expected Q (state part) toxic {q_state_toxic:.3f} / clean "
              "{q_state_clean:.3f}; spread over next tokens (p-weighted std) toxic {q_spread_toxic:.3f} / clean "
              "{q_spread_clean:.3f}. Last action: advantage toxic {last_advantage_toxic:.3f} / clean "
              "{last_advantage_clean:.3f}, LM mass on tokens Q_D rates safer toxic {last_safer_mass_toxic:.2f} / clean "
              "{last_safer_mass_clean:.2f}, AUC of -advantage {last_advantage_auc:.3f}").format(**anatomy)
    head = f"input: {cfg.input} ({len(trajectories)} trajectories, {int(ratios.toxic.sum())} toxic)\n\n{q_line}"
    markdown = write_table(summarize(ratios, rules), out, "estimate_caps",
                           ["rule", "toxic_rate", "toxic_cut", "ppl_ratio", "ess"], head)
    print(f"{q_line}\n\n{markdown}")
    print(f"written: {out / 'estimate_caps.csv'}")


if __name__ == "__main__":
    main()
