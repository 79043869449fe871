#!/usr/bin/env bash
# The decoding benchmarks docs/performance.md reports for the per-step costs, each one process (plain measured
# beside the rectified mode on the same prompts), JSON lines into OUT_DIR. Run from the repo root on idle cores:
#   bash scripts/analysis/bench_step_costs.sh [OUT_DIR]
# offline_pair_shared: the recommended Q_D (10 SmolLM2 blocks, the lower 9 frozen and read from the generator's
#   forward), top-k 50, batch 8 (issue 13's 1.3x line); offline_pair_alone: the same Q_D run on its own (every
#   block trained); offline_pair_200_full: pure sampling at 200 rows (8 prompts x k = 25, the evaluation setting);
#   decoding_default: bench=decoding as configured (30-block copy of the generator, full and top-k 50).
set -euo pipefail
OUT=${1:-outputs/benchmark/step_costs}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
mkdir -p "$OUT"
PAIR=("decoding.value_backbone={source: smollm2, family: llama, num_layers: 10}" "decoding.modes=[plain,rectified_cached]")
bench() { local name=$1; shift; $PY scripts/benchmark.py bench=decoding "$@" hydra.run.dir="$OUT/run_$name" | tee "$OUT/$name.jsonl"; }
bench offline_pair_shared 'decoding.supports=[top_k50]' "${PAIR[@]}" decoding.value.train_top_layers=1
bench offline_pair_alone 'decoding.supports=[top_k50]' "${PAIR[@]}"
bench offline_pair_200_full 'decoding.supports=[full]' "${PAIR[@]}" decoding.value.train_top_layers=1 \
    decoding.batch_size=200 decoding.repeats=2
bench decoding_default
