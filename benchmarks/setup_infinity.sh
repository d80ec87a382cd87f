#!/usr/bin/env bash
# Infinity (michaelfeil/infinity, the embedding server) in its own venv, .ci/cache/infinity-venv,
# for benchmarks/bench_serve.py --infinity only. A benchmarks-only component: no test uses it and
# .ci/install does not run this script, so a failure here cannot fail CI.
#   bash benchmarks/setup_infinity.sh        # idempotent: a stamp records what is in
# Infinity pins numpy<2 and click<8.2, so it shares neither the main venv nor hf-venv. Its optimum
# engine is given optimum 2.x through optimum-onnx (as hf-venv): optimum 1.x imports torch.onnx
# internals that torch 2.13 no longer has, and its bettertransformer refuses transformers>=4.49;
# infinity-emb 0.0.78 runs without bettertransformer. torch==2.13.0 goes in first (the CPU wheel
# here; a bare `torch` would fetch a multi-GB CUDA build) and stays pinned through the second install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.ci/cache/infinity-venv
REQS="infinity-emb[server]==0.0.78 optimum-onnx[onnxruntime]==0.1.0"
STAMP="$VENV/.bert-export-stamp"
WANT="torch==2.13.0 $REQS"
CHECK="import infinity_emb, uvicorn; from optimum.onnxruntime import ORTModelForFeatureExtraction"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
  echo "infinity-venv: up to date" >&2; exit 0
fi
PY=${PYTHON:-python3}
rm -rf "$VENV"  # a changed requirement set: start clean (pip would keep what the old one pulled in)
"$PY" -m venv "$VENV"
export PIP_CACHE_DIR="$PWD/.ci/cache/hf-venv-pip"  # shares hf-venv's wheels (torch)
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q $REQS "torch==2.13.0"
"$VENV/bin/python" -c "$CHECK; print('infinity-venv: infinity-emb', infinity_emb.__version__)" >&2
echo "$WANT" > "$STAMP"
