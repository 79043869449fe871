"""What a cap rule would do, estimated without generating: importance weighting of plain samples.

Trajectories sampled from the plain LM (the behaviour policy of the value data, or a plain generation run)
are reweighted by the likelihood ratio of the rectified policy, ``w = prod_t p'(a_t | s_t) / p(a_t | s_t)``.
Self-normalised, ``sum w * toxic / sum w`` estimates the share of toxic samples under rectification and
``sum w * nll / sum w * tokens`` the generator's own per-token NLL of rectified samples (a perplexity proxy:
the generator, not an outside judge, scores them). The effective sample size ``(sum w)^2 / sum w^2`` says
how far to trust a row: a rule that moves far from the LM leaves few trajectories carrying the estimate.

One forward of the LM and of Q_D per trajectory serves every rule, so a grid over epsilon, ``q_scale``,
``q_baseline`` and cap mode costs seconds per rule where a generation run costs minutes. The estimate is
only valid when the samples came from the same LM and warping (temperature, no top-k / top-p) as the rule
is meant for.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from rectify.decoding.caps import CapConfig
from rectify.decoding.rows import rectify_probs, stop_ids_of


@dataclass
class Trajectory:
    """Token ids of prompt + continuation, where the continuation starts, and whether it ended toxic."""

    ids: list[int]
    prompt_len: int
    toxic: bool


@dataclass
class LogRatios:
    """Per-trajectory log-likelihood ratios for every rule, plus the plain NLL and labels."""

    log_w: np.ndarray  # [rules, trajectories]
    nll: np.ndarray  # [trajectories] plain generator NLL of the continuation
    n_tokens: np.ndarray  # [trajectories]
    toxic: np.ndarray  # [trajectories] bool
    q_state: np.ndarray  # [trajectories] mean over steps of the LM-expected Q, sum_a p(a) Q(s, a)
    q_spread: np.ndarray  # [trajectories] mean over steps of the p-weighted std of Q over next tokens
    # the last action's advantage Q(s, a) - sum_b p(b) Q(s, b), and the LM probability mass on tokens Q_D
    # rates safer than it: on dead-end-truncated data the last action of a toxic trajectory is the word that
    # made it toxic, so these say whether Q_D singles out that token among the ones the LM would pick
    last_advantage: np.ndarray  # [trajectories]
    last_safer_mass: np.ndarray  # [trajectories]


def from_value_data(records: Sequence[Any], tokenizer: Any, max_length: int,
                    threshold: float = -0.5) -> list[Trajectory]:
    """Value-data rows (``rectify.training.data.ValueRecord``), tokenized the way Q_D training reads them;
    a trajectory is toxic when its terminal reward is <= ``threshold``."""
    enc = tokenizer([r.text for r in records], truncation=True, max_length=max_length)["input_ids"]
    return [Trajectory(list(ids), int(r.prompt_len or 1), r.reward <= threshold)
            for r, ids in zip(records, enc, strict=True) if len(ids) > (r.prompt_len or 1)]


def from_generations(prompts: Sequence[str], texts: Sequence[str], scores: Sequence[float], tokenizer: Any,
                     toxic_threshold: float = 0.5) -> list[Trajectory]:
    """Plain generations: prompt ids then the continuation's own ids (as the generator produced them,
    up to re-tokenization); toxic when the scorer gives >= ``toxic_threshold``. Empty continuations are
    dropped (no step to weigh)."""
    out = []
    prompt_ids: dict[str, list[int]] = {}  # each prompt has k generations: tokenize it once
    for prompt, text, score in zip(prompts, texts, scores, strict=True):
        if prompt not in prompt_ids:
            prompt_ids[prompt] = list(tokenizer(prompt)["input_ids"])
        p_ids = prompt_ids[prompt]
        c_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if c_ids:
            out.append(Trajectory(p_ids + list(c_ids), len(p_ids), score >= toxic_threshold))
    return out


def rule_grid(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
              p_min: float = 1e-5) -> list[CapConfig]:
    """Every combination of the listed CapConfig fields (e.g. ``{"epsilon": [...], "q_scale": [...]}``);
    a list of such grids gives their union, in order."""
    if not isinstance(grid, Mapping):
        return [rule for part in grid for rule in rule_grid(part, p_min)]
    grid = {("mode" if k == "cap_mode" else k): v for k, v in grid.items()}  # decoding.cap_mode's name works too
    keys = list(grid)
    unknown = set(keys) - set(CapConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown cap fields {sorted(unknown)}; use {sorted(CapConfig.__dataclass_fields__)}")
    rules = []
    for values in itertools.product(*(list(grid[k]) for k in keys)):
        fields = {"p_min": p_min, **dict(zip(keys, values, strict=True))}
        rules.append(CapConfig(**fields))
    return rules


def _batches(items: Sequence[Trajectory], size: int):
    for start in range(0, len(items), size):
        yield items[start: start + size]


def _pad_with_steps(batch: Sequence[Trajectory]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask, plus (row, position) of every state that chose a continuation token.

    The state before token ``j`` is position ``j - 1``, for continuation tokens ``j = prompt_len .. len - 1``.
    """
    width = max(len(t.ids) for t in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows, cols = [], []
    for i, t in enumerate(batch):
        ids[i, : len(t.ids)] = torch.tensor(t.ids)
        mask[i, : len(t.ids)] = 1
        start = max(t.prompt_len, 1)
        rows += [i] * (len(t.ids) - start)
        cols += list(range(start - 1, len(t.ids) - 1))
    return ids, mask, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)


@torch.inference_mode()
def log_ratios(lm: Any, value_model: Any, trajectories: Sequence[Trajectory], rules: Sequence[CapConfig],
               temperature: float = 1.0, batch_size: int = 16, progress: bool = True) -> LogRatios:
    """``log p'(tau) - log p(tau)`` over each trajectory's continuation tokens, for every rule."""
    n = len(trajectories)
    log_w = np.zeros((len(rules), n))
    nll, n_tokens = np.zeros(n), np.zeros(n, dtype=np.int64)
    q_state, q_spread = np.zeros(n), np.zeros(n)
    last_adv, last_safer = np.zeros(n), np.zeros(n)
    done = 0
    stop_ids = stop_ids_of(value_model)  # for stop-neutral rules
    for batch in tqdm(list(_batches(trajectories, batch_size)), desc="log-ratios", disable=not progress):
        ids, mask, rows_t, cols_t = _pad_with_steps(batch)
        actions = ids[rows_t, cols_t + 1]
        logits = lm(input_ids=ids, attention_mask=mask).logits[rows_t, cols_t].float()
        vocab = logits.shape[-1]
        q = value_model(ids, mask)[rows_t, cols_t].float()[:, :vocab]
        probs = torch.softmax(logits / temperature, -1)
        log_p = torch.log(probs.gather(-1, actions[:, None]).squeeze(-1))
        owner = (rows_t + done).numpy()
        np.add.at(nll, owner, -log_p.double().numpy())
        np.add.at(n_tokens, owner, 1)
        expected = (probs * q).sum(-1, keepdim=True)
        spread = (probs * (q - expected) ** 2).sum(-1).sqrt()
        np.add.at(q_state, owner, expected.squeeze(-1).double().numpy())
        np.add.at(q_spread, owner, spread.double().numpy())
        q_taken = q.gather(-1, actions[:, None])
        is_last = (cols_t + 2 == mask.sum(-1)[rows_t]).numpy()
        last_adv[owner[is_last]] = (q_taken - expected).squeeze(-1).double().numpy()[is_last]
        last_safer[owner[is_last]] = (probs * (q > q_taken)).sum(-1).double().numpy()[is_last]
        for r, rule in enumerate(rules):
            rectified = rectify_probs(probs, q, rule, stop_ids=stop_ids).probs
            step = torch.log(rectified.gather(-1, actions[:, None]).squeeze(-1)) - log_p
            np.add.at(log_w[r], owner, step.double().numpy())
        done += len(batch)
    toxic = np.array([t.toxic for t in trajectories], dtype=bool)
    steps = np.maximum(n_tokens, 1)
    return LogRatios(log_w=log_w, nll=nll, n_tokens=n_tokens, toxic=toxic, q_state=q_state / steps,
                     q_spread=q_spread / steps, last_advantage=last_adv, last_safer_mass=last_safer)


def q_anatomy(ratios: LogRatios) -> dict[str, float]:
    """How much of Q is about the state and how much about the next token, on toxic vs clean trajectories.

    A cap can only single out tokens through the token-specific part; when the spread over next tokens is
    small next to the gap in state values, a rule mostly reacts to the state (it caps every token alike).
    """
    out = {}
    for name, sel in (("toxic", ratios.toxic), ("clean", ~ratios.toxic)):
        for key in ("q_state", "q_spread", "last_advantage", "last_safer_mass"):
            out[f"{key}_{name}"] = float(getattr(ratios, key)[sel].mean()) if sel.any() else math.nan
    both = ratios.toxic.any() and (~ratios.toxic).any()
    # how well the last action's advantage alone tells toxic trajectories from clean ones (0.5: not at all)
    out["last_advantage_auc"] = float(roc_auc_score(ratios.toxic, -ratios.last_advantage)) if both else math.nan
    return out


def estimate(log_w: np.ndarray, toxic: np.ndarray, nll: np.ndarray, n_tokens: np.ndarray) -> dict[str, float]:
    """Self-normalised estimates for one rule (``log_w`` of zeros = the plain policy itself)."""
    w = np.exp(log_w - log_w.max())
    total = w.sum()
    return {
        "toxic_rate": float((w * toxic).sum() / total),
        "nll_per_token": float((w * nll).sum() / (w * n_tokens).sum()),
        "ess": float(total**2 / (w**2).sum()),
    }


def summarize(ratios: LogRatios, rules: Sequence[CapConfig]) -> list[dict[str, Any]]:
    """One row per rule (plus the plain policy first): estimated toxic rate and PPL, relative to plain."""
    plain = estimate(np.zeros(len(ratios.toxic)), ratios.toxic, ratios.nll, ratios.n_tokens)
    rows = [{"rule": "plain", **plain, "toxic_cut": 0.0, "ppl_ratio": 1.0}]
    for rule, lw in zip(rules, ratios.log_w, strict=True):
        est = estimate(lw, ratios.toxic, ratios.nll, ratios.n_tokens)
        cut = 1.0 - est["toxic_rate"] / plain["toxic_rate"] if plain["toxic_rate"] > 0 else math.nan
        rows.append({"rule": describe(rule), **asdict(rule), **est, "toxic_cut": cut,
                     "ppl_ratio": math.exp(est["nll_per_token"] - plain["nll_per_token"])})
    return rows


def describe(rule: CapConfig) -> str:
    """A short label such as ``eps=0.3 normalized policy x4`` (``tilt=64`` first when the rule tilts)."""
    parts = [f"tilt={rule.tilt:g}"] if rule.tilt else []
    parts += [f"eps={rule.epsilon:g}", rule.mode]
    if rule.q_baseline != "zero":
        parts.append(rule.q_baseline)
    if rule.q_scale != 1.0:
        parts.append(f"x{rule.q_scale:g}")
    return " ".join(parts)
