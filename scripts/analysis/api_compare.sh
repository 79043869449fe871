#!/usr/bin/env bash
# Remote (top-K logprobs through this project's own plain server) vs local (top_k=K) rectified generation with the
# same Q_D, rule, prompts and seeds, then evaluate both (docs/api.md). Run from the repo root after `make demo`:
#   bash scripts/analysis/api_compare.sh [Q_D dir] [prompts] [n prompts] [port]
set -euo pipefail
Q=${1:-outputs/demo/train/value_model}; P=${2:-data/demo/prompts_dev.jsonl}; N=${3:-100}; PORT=${4:-8765}; K=20
PY=${PYTHON:-.venv/bin/python}
R="decoding=rectified decoding.epsilon=0.5 decoding.cap_mode=normalized value_model_path=$Q prompts_path=$P limit=$N decoding.num_return_sequences=4"
$PY scripts/serve.py decoding=plain serve.port=$PORT > outputs/api_compare_serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER' EXIT
for i in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 1; done
$PY scripts/generate.py lm=openai_api lm.base_url=http://127.0.0.1:$PORT/v1 lm.top_logprobs=$K $R \
    output_path=outputs/api_compare/remote_k$K/generations.jsonl hydra.run.dir=outputs/api_compare/remote_k$K/run
$PY scripts/generate.py $R decoding.top_k=$K \
    output_path=outputs/api_compare/local_top$K/generations.jsonl hydra.run.dir=outputs/api_compare/local_top$K/run
$PY scripts/evaluate.py eval.input=outputs/api_compare eval.perplexity=false hydra.run.dir=outputs/api_compare/evaluate
# time per token of each: "seconds" / counts.row_steps in its generations.jsonl.meta.json
