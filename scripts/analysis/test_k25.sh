#!/usr/bin/env bash
# The paper's EMT protocol (k = 25 samples per prompt) on the test prompts of a finished full-scale demo
# (python scripts/demo.py +experiment=demo_full): plain sampling and the rule selected on dev, each generated
# once, evaluated under the experiment's judges, then summarised against its targets (issue 14's headline).
# Nothing is chosen here; the rule comes from the demo's selected.json. Run from the repo root:
#   bash scripts/analysis/test_k25.sh [demo out dir] [data dir] [test prompts] [prompts per batch] [all|nontoxic]
# nontoxic: generate only on the non-toxic prompts (prompt toxicity < 0.5) among the first [test prompts]: the
#   headline's subset, at about three quarters of the cost (their seeds follow their place in that subset).
# Outputs: <demo out dir>/test_k25/{plain,<rule>}/ and summary.md. Each step resumes (generate.py continues
# after the last complete prompt; an evaluated run is not re-scored).
set -euo pipefail
DEMO=${1:-outputs/demo_full}; DATA=${2:-data/offline}; LIMIT=${3:-560}; BATCH=${4:-8}; SUBSET=${5:-all}
EXPERIMENT=configs/experiment/demo_full.yaml
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
need "$DEMO/selected.json" "python scripts/demo.py +experiment=demo_full writes it"
OUT=$DEMO/test_k25
PROMPTS=$DATA/prompts_test.jsonl
if [ "$SUBSET" = nontoxic ]; then
    mkdir -p "$OUT"
    PROMPTS=$OUT/prompts_test_nontoxic.jsonl
    $PY -m rectify.data.eval_split "$DATA/prompts_test.jsonl" "$PROMPTS" nontoxic "$LIMIT"
elif [ "$SUBSET" != all ]; then
    echo "error: subset must be all or nontoxic, got $SUBSET" >&2; exit 2
fi
bash scripts/analysis/check_rule.sh "$DEMO" "$PROMPTS" "$OUT" 25 "$LIMIT" "$BATCH" "$EXPERIMENT"
