#!/usr/bin/env bash
# Remote (top-K logprobs through this project's own plain server) vs local (top_k=K) rectified generation with the
# same Q_D, rule, prompts and seeds, then evaluate both (docs/api.md). Run from the repo root after `make demo`:
#   bash scripts/analysis/api_compare.sh [Q_D dir] [prompts] [n prompts] [port] [dtype]
# RULE (environment) holds the rule's generate.py overrides; the default is the recommended clean_64.
# dtype (default float32) pins the served LM, the local LM and Q_D on both sides: in float32 the two paths compute
# the same distributions to float rounding and draw with the same per-row seeds, so they give the same tokens
# (tests/test_remote_rectified_parity.py); in bfloat16 ("auto" on bf16 hardware) the server's batched prefill and
# the local KV-cache decode round differently and the samples part after a few tokens (a statistical comparison).
# Outputs go to outputs/api_compare_<dtype>/ (a rerun resumes; delete the folder to start again).
set -euo pipefail
Q=${1:-outputs/demo/train/value_model}; P=${2:-data/demo/prompts_dev.jsonl}; N=${3:-100}; PORT=${4:-8765}
DTYPE=${5:-float32}; K=20; OUT=outputs/api_compare_$DTYPE
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/preflight.sh"
need "$Q/value_config.json" "a saved Q_D (make demo trains outputs/demo/train/value_model)"
need "$P" "a prompts file (make demo writes data/demo/prompts_dev.jsonl)"
RULE=${RULE:-decoding.tilt=64 decoding.epsilon=0.05}
R="decoding=rectified $RULE decoding.dtype=$DTYPE value_model_path=$Q prompts_path=$P limit=$N decoding.num_return_sequences=4"
mkdir -p $OUT
if curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; then   # its answers would be compared, not this script's
    echo "api_compare.sh: port $PORT already serves something; stop it or pass another port (4th argument)" >&2
    exit 1
fi
$PY scripts/serve.py decoding=plain lm.dtype=$DTYPE serve.port=$PORT > $OUT/serve.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true' EXIT
for i in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break
    if ! kill -0 $SERVER 2> /dev/null || [ "$i" = 120 ]; then
        echo "api_compare.sh: the plain server did not start; the end of $OUT/serve.log:" >&2
        tail -n 5 $OUT/serve.log >&2
        exit 1
    fi
    sleep 1
done
$PY scripts/generate.py lm=openai_api lm.base_url=http://127.0.0.1:$PORT/v1 lm.top_logprobs=$K $R \
    output_path=$OUT/remote_k$K/generations.jsonl hydra.run.dir=$OUT/remote_k$K/run
$PY scripts/generate.py $R lm.dtype=$DTYPE decoding.top_k=$K \
    output_path=$OUT/local_top$K/generations.jsonl hydra.run.dir=$OUT/local_top$K/run
$PY - "$OUT/remote_k$K/generations.jsonl" "$OUT/local_top$K/generations.jsonl" <<'PYEOF'
import json, sys
a, b = ([json.loads(x) for x in open(p)] for p in sys.argv[1:3])
pairs = [(g["text"], h["text"]) for x, y in zip(a, b) for g, h in zip(x["generations"], y["generations"])]
print(f"identical generations, remote vs local: {sum(s == t for s, t in pairs)} of {len(pairs)}")
PYEOF
$PY scripts/evaluate.py eval.input=$OUT eval.perplexity=false hydra.run.dir=$OUT/evaluate
# time per token of each: "seconds" / counts.row_steps in its generations.jsonl.meta.json
