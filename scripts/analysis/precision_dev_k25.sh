#!/usr/bin/env bash
# Does bf16 decoding move quality (issue 13), at the headline's k = 25? Replays a finished demo's dev runs of plain
# sampling and of the selected rule (same prompts, seeds, k, Q_D; the overrides each run recorded) with generator
# and Q_D in float32, evaluates them under the same judges, and prints, per run, each judge's Toxicity Probability
# and the perplexity with their 95% bootstrap intervals in both dtypes (bf16 inside fp32's interval?). The plain
# pair is the control: it shows how far two dtypes drift with no Q_D involved. Run from the repo root:
#   bash scripts/analysis/precision_dev_k25.sh [demo out dir] [out dir]
set -euo pipefail
DEMO=${1:-outputs/demo_k25}; OUT=${2:-$DEMO/precision_fp32}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
need "$DEMO/selected.json" "python scripts/demo.py +experiment=demo_k25 writes it"
mapfile -t RULE < <($PY -m rectify.analysis.selected_rule "$DEMO/selected.json")
NAME=${RULE[0]}
SRC=$DEMO/dev/generations
for RUN in plain "$NAME"; do
    mapfile -t OV < <($PY -c "
import sys, yaml
print('\n'.join(o for o in yaml.safe_load(open(sys.argv[1])) if not o.startswith(('output_path=', 'hydra.run.dir='))))
" "$SRC/$RUN/run/.hydra/overrides.yaml")
    $PY scripts/generate.py "${OV[@]}" lm.dtype=float32 decoding.dtype=float32 \
        output_path=$OUT/$RUN/generations.jsonl hydra.run.dir=$OUT/$RUN/run
done
SCORERS=$($PY -c "import json,sys; print(','.join(sorted({r['scorer'] for r in json.load(open(sys.argv[1]))['rows']})))" \
    "$SRC/$NAME/generations.eval.json")
PPL_SAMPLES=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['rows'][0].get('ppl_samples_per_prompt') or 'null')" \
    "$SRC/$NAME/generations.eval.json")
$PY scripts/evaluate.py "eval.input=[$OUT/plain,$OUT/$NAME]" "eval.scorers=[$SCORERS]" eval.perplexity_samples=$PPL_SAMPLES \
    hydra.run.dir=$OUT/evaluate
$PY -m rectify.analysis.precision_check \
    --pair plain "$OUT/plain/generations.eval.json" "$SRC/plain/generations.eval.json" \
    --pair "$NAME" "$OUT/$NAME/generations.eval.json" "$SRC/$NAME/generations.eval.json" | tee "$OUT/precision.md"
