#!/usr/bin/env bash
# A Q_D variant against the recipe's, on dev (issue 14's levers): the recipe's value data (data=offline) with K
# SmolLM2 samples per training prompt (8 = the recipe's data/offline itself), Q_D trained by the recipe's train.py
# call plus TRAIN_OVERRIDES (e.g. "model.train_top_layers=3"), and `clean_<tilt>` decoded with it on the dev prompts
# of a finished demo_k25_recipe run, beside that run's own dev plain and `clean_64` (copied, not regenerated).
# Chooses nothing and never touches the test prompts. Run from the repo root:
#   [TAG=name] [TILTS="64 128"] [TRAIN_OVERRIDES="..."] bash scripts/analysis/qd_variant_dev.sh [K, default 25]
#       [recipe dir, default outputs/demo_k25_recipe] [its Q_D run dir, default outputs/demo_full/train]
#       [out dir, default outputs/qd_variants]
# TAG names the variant (default k$K); TILTS the tilts decoded with it (default 64). Outputs: data/offline_k$K/
# (K != 8), $OUT/$TAG/train/ (the Q_D), $OUT/dev/{plain,clean_64_k8,clean_<tilt>_$TAG}/, $OUT/dev_table.md
# (select_rule's table over every run there, the recipe's criterion) and $OUT/$TAG/qd_auc.md (both Q_Ds on the
# recipe's validation file and, K != 8, on the variant's: the same prompts, the hash split). Every step resumes.
set -euo pipefail
K=${1:-25}; RECIPE=${2:-outputs/demo_k25_recipe}; QD8=${3:-outputs/demo_full/train}; OUT=${4:-outputs/qd_variants}
TAG=${TAG:-k$K}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
need "$RECIPE/dev/generations/plain" "python scripts/demo.py +experiment=demo_k25_recipe makes it"
need "$RECIPE/dev/generations/clean_64" "python scripts/demo.py +experiment=demo_k25_recipe makes it"
need "$RECIPE/dev/prompts_nontoxic.jsonl" "python scripts/demo.py +experiment=demo_k25_recipe makes it"
need "$QD8/value_model" "the recipe's Q_D run (python scripts/demo.py +experiment=demo_full trains it)"
if [ "$K" = 8 ]; then D=data/offline; else D=data/offline_k$K; fi
QDK=$OUT/$TAG/train
$PY scripts/build_data.py data=offline build.continuations.k=$K build.out_dir=$D hydra.run.dir=$OUT/$TAG/build_data
# shellcheck disable=SC2086  # TRAIN_OVERRIDES is a list of Hydra overrides
[ -d "$QDK/value_model" ] || $PY scripts/train.py +experiment=smollm2 data.train_path=$D/train.json \
    data.val_path=$D/val.json ${TRAIN_OVERRIDES:-} hydra.run.dir=$QDK
mkdir -p "$OUT/dev"
[ -d "$OUT/dev/plain" ] || cp -r "$RECIPE/dev/generations/plain" "$OUT/dev/plain"
[ -d "$OUT/dev/clean_64_k8" ] || cp -r "$RECIPE/dev/generations/clean_64" "$OUT/dev/clean_64_k8"
for T in ${TILTS:-64}; do
    $PY scripts/generate.py prompts_path=$RECIPE/dev/prompts_nontoxic.jsonl limit=null batch_size=8 \
        decoding.num_return_sequences=25 decoding.max_new_tokens=20 decoding=rectified decoding.tilt=$T \
        decoding.epsilon=0.05 value_model_path=$QDK/value_model \
        output_path=$OUT/dev/clean_${T}_$TAG/generations.jsonl hydra.run.dir=$OUT/dev/clean_${T}_$TAG/run
done
RUNS=(); INPUTS=()
for R in "$OUT"/dev/*/; do R=$(basename "$R"); [ "$R" = evaluate ] || { RUNS+=("$R"); INPUTS+=("$OUT/dev/$R"); }; done
LIST=$(IFS=,; echo "${RUNS[*]}"); INPUT_LIST=$(IFS=,; echo "${INPUTS[*]}")
$PY scripts/evaluate.py "eval.input=[$INPUT_LIST]" \
    'eval.scorers=[profanity_svm,jigsaw_lstm_tcc,hatesonar,reward_model]' eval.perplexity_samples=2 \
    hydra.run.dir=$OUT/dev/evaluate
$PY scripts/select_rule.py select.inputs=$OUT/dev "select.runs=[$LIST]" \
    select.output_dir=$OUT hydra.run.dir=$OUT/select_run 'select.judges=[profanity_svm,jigsaw_lstm_tcc,reward_model]' \
    select.aggregate=min
VALS=(--val data/offline/val.json); [ "$D" = data/offline ] || VALS+=(--val "$D/val.json")
$PY -m rectify.analysis.qd_auc --value-model "$QD8/value_model" --value-model "$QDK/value_model" "${VALS[@]}" \
    | tee "$OUT/$TAG/qd_auc.md"
