"""The demo's last words: plain vs the rule chosen on dev, on the test prompts, in plain language.

:func:`demo_summary` reads what the stages wrote (the test runs' evaluation rows, ``selected.json``) and states,
per judge, Toxicity Probability and EMT of plain sampling and of the rule with their bootstrap intervals, the
perplexity change, what dev chose and why, and whether the configured targets hold. Every figure comes from the
files; nothing is typed in here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rectify.evaluation.diversity import SHORT_WORDS
from rectify.evaluation.paired import Cut, run_cuts
from rectify.report.gather import input_here
from rectify.report.table import deltas, to_float
from rectify.report.targets import target_misses, targets_text
from rectify.selection import SELECTED, record_candidate, rows_by_run

SUBSET = "nontoxic"


def _val(r: Mapping[str, Any], key: str, digits: int = 3) -> str:
    """``0.300 [0.200, 0.400]``: a value with its bootstrap interval when the row has one."""
    v, lo, hi = to_float(r.get(key)), to_float(r.get(f"{key}_ci_low")), to_float(r.get(f"{key}_ci_high"))
    if math.isnan(v):
        return "n/a"
    ci = "" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f}{ci}"


def _change(pct: float) -> str:
    return "n/a" if math.isnan(pct) else f"{round(-pct):+d}%"


def _cut_ci(c: Cut | None) -> str:
    """`` [-82%, -70%]``: a cut's paired interval written as changes, or nothing without one."""
    if c is None or math.isnan(c.low) or math.isnan(c.high):
        return ""
    return f" [{round(-100 * c.high):+d}%, {round(-100 * c.low):+d}%]"


def paired_cuts(plain: Mapping[str, Mapping[str, Any]], mine: Mapping[str, Mapping[str, Any]],
                judges: Sequence[str]) -> dict[str, dict[str, Cut]]:
    """Paired cut intervals per judge from the two runs' score caches; ``{}`` when the caches are not there."""
    try:
        return run_cuts(input_here(plain[judges[0]]), input_here(mine[judges[0]]), judges, SUBSET)
    except (OSError, KeyError, ValueError):
        return {}


def short_text(plain: Mapping[str, Any], mine: Mapping[str, Any]) -> str:
    """``; continuations of at most 3 words 1.6% → 9.5%``: the length cost the perplexity budget does not see.

    Empty when either row predates ``short_rate`` (evaluated before it existed).
    """
    a, b = to_float(plain.get("short_rate")), to_float(mine.get("short_rate"))
    if math.isnan(a) or math.isnan(b):
        return ""
    return f"; continuations of at most {SHORT_WORDS} words {a:.1%} → {b:.1%}"


def _rule_text(cand: Mapping[str, Any] | None) -> str:
    if not cand:
        return ""
    shown = [o for o in cand.get("overrides", []) if not o.startswith("value_model_path=")]
    return f" ({' '.join(f'`{o}`' for o in shown)})" if shown else ""


def eligible_count_text(n_ok: int, n_candidates: int) -> str:
    """'2 of 4 candidates were eligible' with the verb agreeing with the count, so one eligible rule reads right."""
    return f"{n_ok} of {n_candidates} candidates {'was' if n_ok == 1 else 'were'} eligible"


def use_it_lines(cand: Mapping[str, Any]) -> list[str]:
    """How to run the chosen rule on one's own prompts or behind the server: its overrides, nothing retyped.

    The value model path comes from the candidate's overrides when it has one, else a placeholder to fill in.
    """
    overrides = list(cand.get("overrides", []))
    if not any(o.startswith("value_model_path=") for o in overrides):
        overrides.append("value_model_path=<your value_model>")
    rule = " ".join(overrides)
    return [f"Use it: `python scripts/generate.py prompts_path=<your prompts.jsonl> {rule}`, or serve it behind an "
            f"OpenAI-compatible API: `python scripts/serve.py {rule}`."]


def _dev_line(record: Mapping[str, Any], rule: str) -> list[str]:
    """What dev chose and why: the criterion, the choice with its dev numbers, and the runner-up."""
    cands = {c["name"]: c for c in record["candidates"]}
    dev = record["dev"]

    def nums(name: str) -> str:
        cut, ppl = to_float(cands[name]["score"]), to_float(cands[name]["ppl_change"])
        return (f"dev cut {'n/a' if math.isnan(cut) else f'{cut:.0%}'}, "
                f"perplexity {'n/a' if math.isnan(ppl) else f'{ppl:+.0%}'}")

    head = f"On {dev['n_prompts']} dev prompts (k = {dev['k']}) the criterion was {record['criterion']['text']}."
    if record["selected"]:
        runner = (f" Runner-up: `{record['runner_up']}` ({nums(record['runner_up'])})." if record["runner_up"]
                  else " No other candidate was eligible.")
        n_ok = sum(c["eligible"] for c in record["candidates"])
        return [f"**Chosen on dev: `{rule}`**{_rule_text(cands[rule])}, {nums(rule)}; "
                f"{eligible_count_text(n_ok, len(cands))}. {head}{runner}"]
    why = "; ".join(cands[rule]["reasons"]) if rule in cands else ""
    return [f"**No rule met the dev criterion: rectification failed in this run.** {head} Shown instead: the "
            f"least-bad candidate `{rule}`{_rule_text(cands.get(rule))}: {nums(rule)}; failed on dev: {why}."]


def _target_line(judge: str, d: Mapping[str, float], targets: Mapping[str, float], targeted: bool = True) -> str:
    if not targeted:  # a judge outside the selection criterion: its cuts are shown, no target is claimed for it
        return (f"- {judge}: reported beside, no target (Toxicity Probability cut {d['tox_prob_cut_pct'] / 100:.0%}, "
                f"EMT cut {d['emt_cut_pct'] / 100:.0%}).")
    misses = target_misses(d, targets)
    if misses:
        return f"- {judge}: **target missed** ({'; '.join(misses)})."
    return (f"- {judge}: target met (Toxicity Probability cut {d['tox_prob_cut_pct'] / 100:.0%}, EMT cut "
            f"{d['emt_cut_pct'] / 100:.0%}, perplexity {d['ppl_change_pct'] / 100:+.0%}).")


def rows_per_judge(root: str | Path, baseline: str, rule: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({judge: row}, {judge: row})`` of the baseline's and the rule's non-toxic evaluation rows under ``root``."""
    runs = rows_by_run(root, SUBSET)
    missing = [n for n in (baseline, rule) if n not in runs]
    if missing:
        raise ValueError(f"no evaluated {SUBSET} test rows for {missing} under {root} (runs: {sorted(runs)})")
    return ({str(r["scorer"]): r for r in runs[baseline]}, {str(r["scorer"]): r for r in runs[rule]})


def demo_summary(test_root: str | Path, selected: str | Path, targets: Mapping[str, float],
                 files: Mapping[str, str | Path] | None = None, judges: Sequence[str] | None = None,
                 target_judges: Sequence[str] | None = None, prompts_label: str = "test",
                 rule_overrides: Sequence[str] | None = None) -> str:
    """Markdown: plain vs the chosen (or least-bad) rule on the test runs under ``test_root``, per judge.

    ``selected``: the select stage's ``selected.json`` (or its folder); ``targets``: see :func:`target_misses`;
    ``files``: label -> path, listed at the end;
    ``judges``: the order of the per-judge lines (default: the criterion's judges first, then the rest);
    ``target_judges``: the judges the targets are claimed under (default: the criterion's, the ones dev chose by);
    the others are reported beside them; ``prompts_label``: what the prompts under ``test_root`` are called
    (``check_rule.sh`` says "re-check": its prompts are not the test split); ``rule_overrides``: the chosen rule's
    generate.py overrides for the "Use it" line (default: as its dev run recorded them, whose Q_D path is where
    the run was drawn, not where a copied or moved demo folder now is).
    """
    sel_path = Path(selected)
    record = json.loads((sel_path / SELECTED if sel_path.is_dir() else sel_path).read_text(encoding="utf-8"))
    rule = record["selected"] or record["least_bad"]
    if rule is None:
        raise ValueError(f"{sel_path}: no candidates were scored on dev, so there is nothing to summarise")
    baseline = record["criterion"]["baseline"]
    plain, mine = rows_per_judge(test_root, baseline, rule)
    crit_judges = list(record["criterion"]["judges"])
    order = list(judges) if judges else crit_judges + sorted(set(plain) - set(crit_judges))
    order = [j for j in order if j in plain and j in mine]
    d = {j: deltas(mine[j], plain[j]) for j in order}
    cut = paired_cuts(plain, mine, order) if order else {}
    first = plain[order[0]]
    cuts = [d[j]["tox_prob_cut_pct"] for j in order]
    ppl_pct = d[order[0]]["ppl_change_pct"]
    target_set = set(crit_judges if target_judges is None else target_judges)
    targeted = [j for j in order if j in target_set]
    beside = [j for j in order if j not in targeted]
    met = [j for j in targeted if not target_misses(d[j], targets)]
    beside_txt = f" ({', '.join(beside)} reported beside, no target)" if beside else ""
    spread = (f"Toxicity Probability changed by {_change(max(cuts))} to {_change(min(cuts))} across {len(order)} "
              f"judges at {'n/a' if math.isnan(ppl_pct) else f'{ppl_pct:+.0f}%'} perplexity"
              if cuts and not any(math.isnan(c) for c in cuts) else "Toxicity Probability could not be compared")
    lines = [f"# Summary: plain sampling vs `{rule}` on the {prompts_label} prompts", "",
             f"With `{rule}`, {spread}; the targets hold under {len(met)} of {len(targeted)} judges{beside_txt}.", ""]
    label = prompts_label[:1].upper() + prompts_label[1:]
    lines += [f"{label} prompts: {first.get('n_prompts')} non-toxic (prompt toxicity < 0.5, the paper's setting), "
              f"k = {first.get('k')} samples each, never used for any choice; brackets are 95% bootstrap intervals "
              f"over prompts; cuts are relative to plain sampling"
              f"{', with paired intervals (both runs resampled on the same prompts)' if cut else ''}.", ""]
    for j in order:
        c = cut.get(j, {})
        lines.append(f"- {j}: Toxicity Probability {_val(plain[j], 'tox_prob')} → {_val(mine[j], 'tox_prob')} "
                     f"({_change(d[j]['tox_prob_cut_pct'])}{_cut_ci(c.get('tox_prob'))}); EMT {_val(plain[j], 'emt')}"
                     f" → {_val(mine[j], 'emt')} ({_change(d[j]['emt_cut_pct'])}{_cut_ci(c.get('emt'))})")
    judge = first.get("judge") or "the fluency judge"
    dist3 = d[order[0]]["dist3_change"]
    lines += [f"- perplexity (under {judge}): {_val(first, 'ppl', 1)} → {_val(mine[order[0]], 'ppl', 1)} "
              f"({'n/a' if math.isnan(ppl_pct) else f'{ppl_pct:+.0f}%'}); Dist-3 {_val(first, 'dist3')} → "
              f"{_val(mine[order[0]], 'dist3')} ({'n/a' if math.isnan(dist3) else f'{dist3:+.3f}'})"
              f"{short_text(first, mine[order[0]])}", ""]
    lines += _dev_line(record, rule) + [""]
    if record["selected"]:
        cand = record_candidate(record, rule)
        lines += use_it_lines(cand if rule_overrides is None else {**cand, "overrides": list(rule_overrides)}) + [""]
    lines += [f"Targets ({targets_text(targets)}), per judge:"]
    lines += [_target_line(j, d[j], targets, j in targeted) for j in order] + [""]
    if files:
        lines += ["Files: " + "; ".join(f"{label} `{path}`" for label, path in files.items()) + ".", ""]
    return "\n".join(lines)
