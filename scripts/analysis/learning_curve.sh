#!/usr/bin/env bash
# Q_D learning curve (issue 14): train the recommended recipe on 1/4 and 1/2 of the training PROMPTS
# (data.train_fraction: a seeded subset, all trajectories of a kept prompt; validation unchanged) and on all of
# them, then print a markdown table of training prompts / rows / toxic rows, best and final val/auc_min_q and
# the calibration's Brier score, to tell whether data is still the bottleneck. Run from the repo root:
#   bash scripts/analysis/learning_curve.sh [full-data run dir or -] [data dir] [out dir] [train.py overrides...]
# full-data run dir: an existing scripts/train.py +experiment=smollm2 run on all of the data (the dir holding
#   value_model/, or value_model/ itself) reused as the 1.0 point; "-" or empty (default) trains it too.
# data dir (default data/offline): holds train.json and val.json. out dir (default outputs/learning_curve):
#   one run per fraction, $OUT/frac_$F. A fraction whose value_model/ exists is skipped (a rerun resumes).
set -euo pipefail
FULL=${1:--}; D=${2:-data/offline}; OUT=${3:-outputs/learning_curve}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"   # before the shift: its --help check reads "$1"
shift $(( $# < 3 ? $# : 3 ))
need "$D/train.json" "python scripts/build_data.py data=offline builds it"
FRACTIONS="0.25 0.5"
if [ "$FULL" = "-" ] || [ -z "$FULL" ]; then
    FRACTIONS="$FRACTIONS 1.0"
elif [ ! -d "$FULL/value_model" ] && { [ "$(basename "$FULL")" != value_model ] || [ ! -d "$FULL" ]; }; then
    echo "error: $FULL is not a Q_D run dir (no value_model/ in it)" >&2; exit 1
fi
mkdir -p "$OUT"
RUNS=()
for F in $FRACTIONS; do
    RUN=$OUT/frac_$F
    RUNS+=("$F=$RUN")
    if [ -d "$RUN/value_model" ]; then
        echo "fraction $F: $RUN/value_model exists, skipped"; continue
    fi
    echo "fraction $F: training into $RUN"
    $PY scripts/train.py +experiment=smollm2 data.train_path=$D/train.json data.val_path=$D/val.json \
        data.train_fraction=$F hydra.run.dir=$RUN "$@"
done
[ "$FULL" = "-" ] || [ -z "$FULL" ] || RUNS+=("1.0=$FULL")
$PY -m rectify.analysis.learning_curve "${RUNS[@]}" | tee "$OUT/learning_curve.md"
