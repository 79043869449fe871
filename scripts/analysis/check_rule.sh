#!/usr/bin/env bash
# Plain sampling vs the rule a finished demo selected on dev, on any prompts file: each generated once, evaluated
# under the experiment's judges (or SCORERS), summarised against its targets. Nothing is chosen here. Run from the
# repo root:
#   bash scripts/analysis/check_rule.sh DEMO_DIR PROMPTS OUT_DIR [k] [limit] [prompts per batch] [experiment yaml]
# DEMO_DIR holds selected.json (scripts/demo.py's output dir); the experiment yaml (default configs/demo.yaml)
# gives evaluate.scorers and summary.targets. SCORERS=a,b,c overrides the judges; EXTRA_SCORERS=d adds to them.
# Outputs: OUT_DIR/{plain,<rule>}/, OUT_DIR/summary.md and OUT_DIR/scorers.txt; every step resumes.
set -euo pipefail
DEMO=${1:-}; PROMPTS=${2:-}; OUT=${3:-}; K=${4:-4}; LIMIT=${5:-null}; BATCH=${6:-8}; EXPERIMENT=${7:-configs/demo.yaml}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
[ -n "$OUT" ] || { usage >&2; exit 2; }
need "$DEMO/selected.json" "a finished scripts/demo.py run's dir"
need "$PROMPTS" "the prompts to check the rule on"
mapfile -t RULE < <($PY -m rectify.analysis.selected_rule "$DEMO/selected.json")
NAME=${RULE[0]}; RULE=("${RULE[@]:1}")
SCORERS=${SCORERS:-$($PY -c "from omegaconf import OmegaConf; print(','.join(OmegaConf.load('$EXPERIMENT').evaluate.scorers))")}
EXTRA_SCORERS=${EXTRA_SCORERS:-}
for EXTRA in ${EXTRA_SCORERS//,/ }; do [[ ",$SCORERS," == *",$EXTRA,"* ]] || SCORERS="$SCORERS,$EXTRA"; done
mkdir -p "$OUT" && echo "$SCORERS" > "$OUT/scorers.txt"   # the judges used here (unseen_check.sh reads them)
COMMON="prompts_path=$PROMPTS limit=$LIMIT batch_size=$BATCH decoding.num_return_sequences=$K decoding.max_new_tokens=20"
for RUN in plain "$NAME"; do
    if [ "$RUN" = plain ]; then OV=(decoding=plain); else OV=("${RULE[@]}"); fi
    $PY scripts/generate.py $COMMON "${OV[@]}" output_path=$OUT/$RUN/generations.jsonl hydra.run.dir=$OUT/$RUN/run
done
$PY scripts/evaluate.py "eval.input=[$OUT/plain,$OUT/$NAME]" "eval.scorers=[$SCORERS]" eval.perplexity_samples=2 \
    hydra.run.dir=$OUT/evaluate
$PY - "$OUT" "$DEMO/selected.json" "$EXPERIMENT" <<'PYEOF' | tee "$OUT/summary.md"
import sys
from omegaconf import OmegaConf
from rectify.report.summary import demo_summary
out, selected, experiment = sys.argv[1:4]
targets = OmegaConf.to_container(OmegaConf.load(experiment).summary.targets)
print(demo_summary(out, selected, targets, prompts_label="re-check"))
PYEOF
