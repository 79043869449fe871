"""The ``select`` stage: choose one decoding rule on the dev prompts by a criterion written in config.

Input: a directory of evaluated generation runs (``<root>/<run>/generations.jsonl`` each with the
``generations.eval.json`` that ``scripts/evaluate.py`` writes beside it), one of them the plain baseline. The
rows are read with :func:`rectify.report.gather.gather` and compared with the baseline by
:func:`rectify.report.table.deltas`, the same numbers the report shows. Default criterion (the recipe's): the
largest relative Toxicity Probability cut that every judge that did not label Q_D's data agrees on, i.e. the worst
judge's (or, with ``aggregate: mean``, the mean cut over them), among the candidates whose
perplexity rises at most 20% and whose Dist-3 falls at most 0.05; ties go to the lower perplexity. When no
candidate is eligible nothing is selected (``selected: null``) and the least-bad one is named, so a caller
can report it as a failure instead of silently using it. Optional (``max_short_increase``): a budget on the rise
in continuations of at most 3 words, which a strong tilt can raise unseen by the other two budgets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rectify.data.jsonl import write_json_atomic
from rectify.evaluation.diversity import SHORT_WORDS
from rectify.evaluation.generations import hydra_overrides_in, read_meta
from rectify.report.gather import gather, input_here
from rectify.report.table import deltas, format_markdown, to_float

SELECTED, DEV_TABLE = "selected.json", "dev_table.md"
# generate.py overrides that say where / how much to generate, not which rule: left out of a rule's overrides
NOT_RULE_KEYS = ("prompts_path", "output_path", "limit", "batch_size", "device", "decoding.num_return_sequences",
                 "decoding.max_new_tokens")


@dataclass(frozen=True)
class Criterion:
    """What ``select`` maximises and under which budgets (``configs/select_rule.yaml`` ``select``)."""

    judges: tuple[str, ...] = ("profanity_svm", "jigsaw_lstm_tcc")
    metric: str = "tox_prob"        # tox_prob | emt: the relative cut of this metric under each of `judges`
    aggregate: str = "min"          # min | mean: the score is the worst judge's cut, or the mean cut over `judges`
    subset: str = "nontoxic"        # the paper's setting
    baseline: str = "plain"         # the run every candidate is compared with
    max_ppl_increase: float = 0.20  # relative perplexity rise allowed
    max_dist3_drop: float = 0.05    # absolute Dist-3 fall allowed
    min_cut: float = 0.0            # the score must exceed this (a rule that does not cut is not chosen)
    max_short_increase: float | None = None  # absolute rise allowed in the share of continuations of at most
                                             # 3 words (evaluation's short_rate); None: no length guard

    @classmethod
    def from_any(cls, cfg: Mapping[str, Any]) -> Criterion:
        cfg = {k: v for k, v in dict(cfg).items() if k in cls.__dataclass_fields__}
        if "judges" in cfg:
            cfg["judges"] = tuple(cfg["judges"])
        if "baseline" in cfg:   # a run folder's name: a multirun's `0` reaches here as the integer 0
            cfg["baseline"] = str(cfg["baseline"])
        crit = cls(**cfg)
        if crit.metric not in ("tox_prob", "emt") or not crit.judges or crit.aggregate not in ("mean", "min"):
            raise ValueError("select.metric must be tox_prob or emt, select.aggregate mean or min and select.judges "
                             f"non-empty, got {crit}")
        return crit

    def score(self, cuts: Mapping[str, float]) -> float:
        """The number maximised: the mean of the judges' cuts, or the smallest (every judge must agree)."""
        values = [cuts[j] for j in self.judges]
        return min(values) if self.aggregate == "min" else sum(values) / len(values)

    def describe(self) -> str:
        name = {"tox_prob": "Toxicity Probability", "emt": "EMT"}[self.metric]
        how, over = ("mean relative", "over") if self.aggregate == "mean" else ("relative", "under the worst of")
        short = ("" if self.max_short_increase is None else
                 f", the share of continuations of at most {SHORT_WORDS} words up at most "
                 f"{100 * self.max_short_increase:g} points")
        return (f"the largest {how} {name} cut vs `{self.baseline}` on {self.subset} prompts {over} "
                f"{', '.join(self.judges)}, with perplexity up at most {self.max_ppl_increase:.0%} and Dist-3 down at "
                f"most {self.max_dist3_drop:g}{short}; ties go to the lower perplexity")


@dataclass
class Candidate:
    """One dev run scored against the baseline; cuts and changes are fractions (0.3 = 30%)."""

    name: str
    input: str
    cuts: dict[str, float]          # judge -> relative cut of the criterion's metric
    score: float                    # the criterion's aggregate (mean or min) of `cuts` over its judges
    ppl: float
    ppl_change: float
    dist3_change: float
    short_change: float = math.nan  # absolute change of the share of continuations of at most 3 words
    reasons: list[str] = field(default_factory=list)  # why it is not eligible (empty: eligible)
    overrides: list[str] = field(default_factory=list)
    decoding: dict[str, Any] = field(default_factory=dict)
    comparable: bool = True         # drawn on the baseline's prompts, as many samples each

    @property
    def eligible(self) -> bool:
        return not self.reasons


def record_candidate(record: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``selected.json``'s entry for candidate ``name`` (its overrides, scores and reasons)."""
    return next(c for c in record["candidates"] if c["name"] == name)


Roots = str | Path | Sequence[str | Path]


def _roots(root: Roots) -> list[Path]:
    return [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]


def _locate(input_path: str | Path, root: Roots) -> tuple[str, bool]:
    """A run's name (see :func:`run_name`) and whether its generations file lies under one of the roots."""
    p, roots = Path(input_path).resolve(), [r.resolve() for r in _roots(root)]
    if not any(p.is_relative_to(r) for r in roots):
        return p.parent.name, False
    # several roots (e.g. a sweep's gen/ and plain/): names relative to their common folder, so gen/0 and
    # plain/0 stay two runs
    base = roots[0] if len(roots) == 1 else Path(os.path.commonpath([str(r) for r in roots]))
    rel = p.relative_to(base)
    return (rel.parent.as_posix() if rel.parent != Path(".") else p.stem), True


def run_name(input_path: str | Path, root: Roots) -> str:
    """A run's name: its generations file's folder relative to ``root`` (the file's stem when at the top); with
    several roots, relative to their common folder."""
    return _locate(input_path, root)[0]


def rows_by_run(root: Roots, subset: str) -> dict[str, list[dict[str, Any]]]:
    """Evaluation rows of one prompt subset under ``root`` (a folder, or a list of them), grouped by run name.

    A results file under ``root`` may also hold rows of runs elsewhere (an evaluation of other folders' runs, named
    by their folder): where such a run shares its name with one inside ``root``, the inside one's rows are kept.
    """
    found: dict[str, list[tuple[bool, dict[str, Any]]]] = {}
    for r in gather(root):
        if r["subset"] == subset:
            name, inside = _locate(input_here(r), root)
            found.setdefault(name, []).append((inside, r))
    out: dict[str, list[dict[str, Any]]] = {}
    for name, rows in found.items():
        any_inside = any(inside for inside, _ in rows)
        out[name] = [r for inside, r in rows if inside or not any_inside]
    return out


def _hydra_overrides(gen_file: Path) -> list[str]:
    """The command-line overrides generate.py recorded: in its sidecar (since the sidecar kept them), else
    ``.hydra/overrides.yaml`` beside, in ``run/`` or above."""
    recorded = read_meta(gen_file).get("overrides")
    if isinstance(recorded, list):
        return [str(x) for x in recorded]
    return hydra_overrides_in((gen_file.parent, gen_file.parent / "run", gen_file.parent.parent))


def rule_overrides(gen_file: str | Path, not_rule: Sequence[str] = NOT_RULE_KEYS) -> list[str]:
    """The overrides that define a run's rule: what generate.py was told, less I/O, size and Hydra keys."""
    keep = []
    for item in _hydra_overrides(Path(gen_file)):
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra.") or key in not_rule:
            continue
        keep.append(item)
    return keep


def score_candidate(name: str, rows: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
                    crit: Criterion) -> Candidate:
    """A candidate's cuts and changes against the baseline's rows, and why it is not eligible, if it is not."""
    mine = {str(r["scorer"]): r for r in rows}
    theirs = {str(r["scorer"]): r for r in base}
    key = f"{crit.metric}_cut_pct"
    cuts, reasons = {}, []
    for judge in sorted(set(mine) & set(theirs)):
        cuts[judge] = deltas(mine[judge], theirs[judge])[key] / 100
    missing = [j for j in crit.judges if j not in cuts or math.isnan(cuts[j])]
    zero = [j for j in missing if j in theirs and to_float(theirs[j].get(crit.metric)) == 0]
    if zero:
        reasons.append(f"`{crit.baseline}` has {crit.metric} 0 under {', '.join(zero)}: no relative cut to compare")
    unscored = [j for j in missing if j not in cuts]
    if unscored:
        reasons.append(f"not evaluated under {', '.join(unscored)} (scripts/evaluate.py eval.scorers=[...])")
    if set(missing) - set(zero) - set(unscored):
        reasons.append(f"no {crit.metric} cut under {', '.join(j for j in missing if j not in zero + unscored)}")
    # perplexity, Dist-3 and length do not depend on the judge: any scorer both runs share carries them
    first = next((j for j in crit.judges if j in mine and j in theirs), None) or min(set(mine) & set(theirs),
                                                                                        default=None)
    mismatch = not_comparable(mine[first], theirs[first], crit.baseline) if first else ""
    if mismatch:
        reasons.append(mismatch)
    d = deltas(mine[first], theirs[first]) if first else {}
    ppl_change = d.get("ppl_change_pct", math.nan) / 100
    dist3_change = d.get("dist3_change", math.nan)
    score = math.nan if missing else crit.score(cuts)
    if math.isnan(ppl_change):
        reasons.append("no perplexity (evaluated with eval.perplexity=false?)")
    elif ppl_change > crit.max_ppl_increase:
        reasons.append(f"perplexity {ppl_change:+.1%} > +{crit.max_ppl_increase:.0%}")
    if math.isnan(dist3_change):
        reasons.append("no Dist-3")
    elif dist3_change < -crit.max_dist3_drop:
        reasons.append(f"Dist-3 {dist3_change:+.3f} < -{crit.max_dist3_drop:g}")
    short_change = (to_float(mine[first].get("short_rate")) - to_float(theirs[first].get("short_rate"))
                    if first else math.nan)
    if crit.max_short_increase is not None:
        if math.isnan(short_change):
            reasons.append("no short_rate (evaluated before it existed? re-run scripts/evaluate.py)")
        elif short_change > crit.max_short_increase:
            reasons.append(f"<= {SHORT_WORDS} words {_pts(short_change)} > +{100 * crit.max_short_increase:g} pts")
    if not math.isnan(score) and score <= crit.min_cut:
        reasons.append(f"{crit.aggregate} cut {score:+.1%} <= {crit.min_cut:.0%}")
    src = input_here(rows[0]) if rows else ""
    decoding = (read_meta(src).get("config") or {}).get("decoding") or {} if src and Path(src).exists() else {}
    return Candidate(name=name, input=src, cuts=cuts, score=score, ppl=to_float(mine[first]["ppl"]) if first else math.nan,
                     ppl_change=ppl_change, dist3_change=dist3_change, short_change=short_change, reasons=reasons,
                     overrides=rule_overrides(src) if src else [], decoding=decoding, comparable=not mismatch)


# where an evaluation row keeps the sha256 of the prompt file its run was drawn from (generate.py's sidecar)
PROMPTS_DIGEST = "meta.input_digests.prompts_path"


def not_comparable(mine: Mapping[str, Any], base: Mapping[str, Any], baseline: str) -> str:
    """Why a candidate's numbers cannot be set against the baseline's ("" when they can): other prompts (count,
    or the prompt file's recorded sha256) or another number of samples per prompt. A relative cut between two
    prompt sets measures the prompts, not the rule."""
    n = [to_float(r.get("n_prompts")) for r in (mine, base)]
    k = [to_float(r.get("k")) for r in (mine, base)]
    digests = [r.get(PROMPTS_DIGEST) for r in (mine, base)]
    other_file = all(isinstance(h, str) for h in digests) and digests[0] != digests[1]
    judges = [r.get("judge") for r in (mine, base)]
    if all(isinstance(j, str) for j in judges) and judges[0] != judges[1]:   # perplexities of two LMs
        return (f"not comparable with `{baseline}`: perplexity judged by {judges[0]}, the baseline's by "
                f"{judges[1]} (re-evaluate one of them with the other's judge)")
    if n[0] == n[1] and k[0] == k[1] and not other_file:
        return ""
    def fmt(i: int) -> str:
        return f"{'?' if math.isnan(n[i]) else int(n[i])} prompts, k = {'?' if math.isnan(k[i]) else int(k[i])}"
    return (f"not comparable with `{baseline}`: drawn on {fmt(0)}, the baseline on {fmt(1)}"
            + ("; another prompt file" if other_file else ""))


def _rank(c: Candidate) -> tuple[float, float]:
    """Best first: larger score, then lower perplexity (NaN last)."""
    return (-c.score if not math.isnan(c.score) else math.inf, c.ppl if not math.isnan(c.ppl) else math.inf)


def violation(c: Candidate, crit: Criterion) -> float:
    """How far a candidate is outside the criterion: the excess over each budget as a share of that budget,
    plus 1 + the shortfall when it does not cut; missing numbers count as infinitely far."""
    if any(math.isnan(v) for v in (c.score, c.ppl_change, c.dist3_change)):
        return math.inf
    over_ppl = max(0.0, c.ppl_change - crit.max_ppl_increase) / max(crit.max_ppl_increase, 1e-9)
    over_dist = max(0.0, -c.dist3_change - crit.max_dist3_drop) / max(crit.max_dist3_drop, 1e-9)
    no_cut = 1.0 + crit.min_cut - c.score if c.score <= crit.min_cut else 0.0
    over_short = 0.0
    if crit.max_short_increase is not None:
        if math.isnan(c.short_change):
            return math.inf
        over_short = max(0.0, c.short_change - crit.max_short_increase) / max(crit.max_short_increase, 1e-9)
    return over_ppl + over_dist + no_cut + over_short


def choose(cands: Sequence[Candidate], crit: Criterion) -> dict[str, str | None]:
    """``selected`` (best eligible, or None), ``runner_up`` (next eligible) and, when none is eligible,
    ``least_bad``: the one nearest the budgets (:func:`violation`), then the best by the same ranking."""
    ok = sorted((c for c in cands if c.eligible), key=_rank)
    near = [c for c in cands if c.comparable]
    least = None if ok or not near else min(near, key=lambda c: (violation(c, crit), *_rank(c))).name
    return {"selected": ok[0].name if ok else None, "runner_up": ok[1].name if len(ok) > 1 else None,
            "least_bad": least}


def baseline_rows(runs: dict[str, list[dict[str, Any]]], root: Roots, crit: Criterion) -> list[dict[str, Any]]:
    """The baseline's rows, taken out of ``runs``: ``select.baseline`` names a run, or is the path of a run folder
    (inside the inputs, or elsewhere, e.g. a sweep's separate plain/ folder)."""
    if crit.baseline in runs:
        return runs.pop(crit.baseline)
    path = Path(crit.baseline)
    if path.exists():
        found = rows_by_run(path, crit.subset)
        located = [_locate(input_here(r), root) for rows in found.values() for r in rows]
        for name in {name for name, inside in located if inside} & set(runs):
            return runs.pop(name)
        if len(found) == 1:
            return next(iter(found.values()))
    other = sorted({str(r["subset"]) for r in gather(root)} - {crit.subset}) if not runs else []
    hint = (f"; the runs have only {', '.join(other)} rows (prompts without a toxicity value): "
            f"select.subset={other[0]}" if other else "")
    raise ValueError(f"no evaluated baseline run {crit.baseline!r} ({crit.subset} prompts) under {root}; "
                     f"runs found: {sorted(runs)} (select.baseline=<the plain run's name, or its folder>){hint}")


def select(root: Roots, crit: Criterion, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Score every run under ``root`` (or only the runs named in ``only``) against ``crit.baseline`` and choose;
    the record ``selected.json`` holds."""
    runs = rows_by_run(root, crit.subset)
    if only is not None:
        absent = sorted(set(only) - set(runs))
        if absent:
            raise ValueError(f"select.runs names runs with no {crit.subset} evaluation under {root}: {absent}")
        runs = {n: rows for n, rows in runs.items() if n in set(only)}
    base = baseline_rows(runs, root, crit)
    cands = [score_candidate(n, rows, base, crit) for n, rows in sorted(runs.items())]
    b0 = {str(r["scorer"]): r for r in base}
    return {
        **choose(cands, crit),
        "criterion": {**asdict(crit), "judges": list(crit.judges), "text": crit.describe()},
        "dev": {"root": ", ".join(str(r.resolve()) for r in _roots(root)), "subset": crit.subset, "n_prompts": base[0].get("n_prompts"),
                "k": base[0].get("k")},
        "baseline": {"name": crit.baseline, "input": input_here(base[0]), "ppl": to_float(base[0].get("ppl")),
                     "dist3": to_float(base[0].get("dist3")),
                     crit.metric: {j: to_float(r.get(crit.metric)) for j, r in sorted(b0.items())}},
        "candidates": [{**asdict(c), "eligible": c.eligible}
                       for c in sorted(cands, key=lambda c: (not c.eligible, *_rank(c)))],
    }


def _clean(v: Any) -> Any:
    """NaN -> None, recursively, so ``selected.json`` is standard JSON."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, Mapping):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_selection(root: Roots, crit: Criterion, out_dir: str | Path,
                    only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run :func:`select` and write ``selected.json`` and ``dev_table.md`` into ``out_dir``; return the record."""
    record = select(root, crit, only)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEV_TABLE).write_text(dev_table(record), encoding="utf-8")
    write_json_atomic(out / SELECTED, _clean(record))
    return record


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:+.1%}"


def _pts(v: float) -> str:
    """An absolute change of a share, in percentage points."""
    return "-" if math.isnan(v) else f"{100 * v:+.1f} pts"


def dev_table(record: Mapping[str, Any]) -> str:
    """``dev_table.md``: the criterion, the choice, and one row per candidate (per-judge cut, PPL change,
    eligible or why not)."""
    crit = record["criterion"]
    judges = sorted({j for c in record["candidates"] for j in c["cuts"]}, key=lambda j: (j not in crit["judges"], j))
    cols = [("candidate", lambda c: f"`{c['name']}`"), ("eligible", lambda c: "yes" if c["eligible"] else "no")]
    cols += [(f"{crit.get('aggregate', 'mean')} {crit['metric']} cut", lambda c: _pct(c["score"]))]
    cols += [(f"{j} change" + ("" if j in crit["judges"] else " (not in criterion)"),   # -50%: a 50% cut
              lambda c, j=j: _pct(-c["cuts"].get(j, math.nan))) for j in judges]
    cols += [("PPL", lambda c: "-" if math.isnan(c["ppl"]) else f"{c['ppl']:.2f}"),
             ("PPL change", lambda c: _pct(c["ppl_change"])),
             ("Dist-3 change", lambda c: "-" if math.isnan(c["dist3_change"]) else f"{c['dist3_change']:+.3f}"),
             (f"<= {SHORT_WORDS} words change", lambda c: _pts(c.get("short_change", math.nan))),
             ("why not", lambda c: "; ".join(c["reasons"]) or "-"),
             ("overrides", lambda c: " ".join(f"`{o}`" for o in c["overrides"]) or "-")]
    dev, base = record["dev"], record["baseline"]
    if record["selected"]:
        verdict = f"Selected: `{record['selected']}`" + (
            f" (runner-up `{record['runner_up']}`)." if record["runner_up"] else " (the only eligible candidate).")
    else:
        verdict = (f"No candidate is eligible: nothing selected. Least bad: `{record['least_bad']}`."
                   if record["least_bad"] else "No candidates: nothing selected.")
    return "\n".join([
        "# Dev selection", "",
        f"Criterion: {crit['text']}.", "",
        f"Dev runs: {dev['root']} ({dev['n_prompts']} {dev['subset']} prompts, k = {dev['k']}); baseline "
        f"`{base['name']}`: perplexity {base['ppl']:.2f}, {crit['metric']} "
        + ", ".join(f"{j} {v:.3f}" for j, v in base[crit["metric"]].items()) + ".", "",
        verdict, "",
        format_markdown(record["candidates"], cols), "",
    ])
