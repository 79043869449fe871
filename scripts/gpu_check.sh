#!/usr/bin/env bash
# GPU readiness in one go (under 8 minutes on one GPU): tiny GPT-2-architecture models with the real GPT-2
# tokenizer (nothing large to download), so it runs offline on a fresh GPU machine:
#   1. what dtype / precision `auto` picks here;
#   2. Q_D training, a few steps with trainer=gpu in bf16-mixed (trainer.precision=auto);
#   3. plain and rectified generation on CUDA with the trained Q_D (dtype auto, top-k 50 -> sparse support);
#   4. bench=generation and bench=decoding on CUDA.
#   bash scripts/gpu_check.sh                       # on a GPU machine (writes outputs/gpu_check/)
#   DEVICE=cpu TRAINER=cpu bash scripts/gpu_check.sh  # the same steps on CPU (a dry run of the script)
# Paste its output into docs/performance.md ("GPU check").
set -euo pipefail
# --help prints this header; settings are the environment variables below, so any argument is refused before
# anything is deleted or run
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || { echo "gpu_check.sh takes no arguments (settings: DEVICE, TRAINER, PY, OUT_DIR, STEPS," \
  "BENCH_PROMPTS; --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
TRAINER=${TRAINER:-gpu}
OUT=${OUT_DIR:-outputs/gpu_check}
STEPS=${STEPS:-5}
BENCH_PROMPTS=${BENCH_PROMPTS:-64}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
TINY='{num_layers: 4, hidden_size: 256, num_heads: 4, max_positions: 256, seed: 0}'
GPT2="{source: hub, name_or_path: tiny-gpt2, family: gpt2, tokenizer: gpt2, dtype: auto, random_init: $TINY}"
rm -rf "$OUT" && mkdir -p "$OUT"
t0=$SECONDS
step() { echo; echo "== $1 ($((SECONDS - t0)) s)"; }

step "1/4 hardware"
$PY - <<PYEOF
import torch
from rectify.precision import resolve_dtype, resolve_precision
print("torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("dtype auto ->", resolve_dtype("auto", "$DEVICE"), "| precision auto ->", resolve_precision("auto", "$TRAINER"))
PYEOF

step "2/4 train Q_D ($STEPS steps, trainer=$TRAINER, precision auto)"
$PY scripts/train.py +experiment=gpt2 debug=smoke trainer="$TRAINER" trainer.precision=auto \
  trainer.max_steps="$STEPS" trainer.limit_train_batches="$STEPS" "model.backbone.random_init=$TINY" \
  calibration.enabled=false hydra.run.dir="$OUT/train" 2>&1 | grep -E "precision|exported|Error|error" || true
test -f "$OUT/train/value_model/value_config.json"

step "3/4 generate plain and rectified on $DEVICE"
printf '%s\n' "You are such a" "The weather today is" "I can't believe that you" > "$OUT/prompts.txt"
for dec in plain rectified; do
  extra=(); [ "$dec" = rectified ] && extra=(value_model_path="$OUT/train/value_model")
  $PY scripts/generate.py "decoding=$dec" lm=gpt2 "lm=$GPT2" device="$DEVICE" \
    prompts_path="$OUT/prompts.txt" output_path="$OUT/$dec.jsonl" decoding.num_return_sequences=4 \
    decoding.top_k=50 batch_size=3 "${extra[@]}" hydra.run.dir="$OUT/gen_$dec" 2>&1 | grep -E "auto ->|wrote|Error" || true
  test -s "$OUT/$dec.jsonl"
done

step "4/4 benchmarks on $DEVICE"
$PY scripts/benchmark.py bench=generation generation.device="$DEVICE" "generation.generator=$GPT2" \
  generation.num_prompts="$BENCH_PROMPTS" hydra.run.dir="$OUT/bench_gen" 2>&1 | grep '^{'
$PY scripts/benchmark.py bench=decoding decoding.device="$DEVICE" "decoding.generator=$GPT2" decoding.threads=null \
  hydra.run.dir="$OUT/bench_dec" 2>&1 | grep '^{'
echo; echo "gpu_check: all steps passed in $((SECONDS - t0)) s"
