#!/usr/bin/env bash
# The recipe a finished demo selected, re-checked on prompts no stage has read (the insults package's unlabelled
# final.csv, rectify/data/unseen.py) and under one more judge than the demo selected with (our MiniLM
# reward_model, when scripts/train_reward_model.py has exported it). Run from the repo root:
#   bash scripts/analysis/unseen_check.sh [demo out dir] [n prompts] [k] [experiment yaml] [all|nontoxic] [out name]
# nontoxic: generate only on the non-toxic ones (the summary's subset). Outputs: <demo out dir>/<out name, default
# unseen>/{prompts_unseen.jsonl, plain/, <rule>/, summary.md, recheck.md (cuts inside the test run's intervals?)}.
set -euo pipefail
DEMO=${1:-outputs/demo}; N=${2:-500}; K=${3:-4}; EXPERIMENT=${4:-configs/demo.yaml}; SUBSET=${5:-all}
PY=${PYTHON:-.venv/bin/python}
OUT=$DEMO/${6:-unseen}
mkdir -p "$OUT"
[ -s "$OUT/prompts_unseen.jsonl" ] || $PY -m rectify.data.unseen "$OUT/prompts_unseen.jsonl" "$N" 0
PROMPTS=$OUT/prompts_unseen.jsonl
if [ "$SUBSET" != all ]; then
    PROMPTS=$OUT/prompts_unseen_$SUBSET.jsonl
    $PY -m rectify.data.eval_split "$OUT/prompts_unseen.jsonl" "$PROMPTS" "$SUBSET"
fi
EXTRA=
[ -d "${RECTIFY_REWARD_MODEL:-outputs/reward_model/export}" ] && EXTRA=reward_model
EXTRA_SCORERS=$EXTRA bash scripts/analysis/check_rule.sh "$DEMO" "$PROMPTS" "$OUT" "$K" null 8 "$EXPERIMENT"
# The re-check's cuts against the reported test run's paired intervals (rectify/analysis/recheck.py).
[ -d "$DEMO/test/generations" ] && $PY -m rectify.analysis.recheck "$DEMO/test/generations" "$OUT" \
    "$DEMO/selected.json" "$OUT/recheck.md"
true
