#!/usr/bin/env bash
# The Hugging Face consumers' own venv (.ci/cache/hf-venv): Optimum's ORTModelFor* (optimum-onnx)
# and sentence-transformers' ONNX backend, which pin transformers 4.x and so can never share the
# main venv (transformers 5.x). tests/test_consumers.py drives it in a subprocess.
# torch==2.13.0 goes in FIRST: it resolves to the CPU wheel here, and a bare `torch` pulled in by
# sentence-transformers would fetch a multi-GB CUDA build. Idempotent: a stamp records what is in.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.ci/cache/hf-venv
REQS="optimum-onnx[onnxruntime]==0.1.0 sentence-transformers==5.7.0"
STAMP="$VENV/.bert-export-stamp"
WANT="torch==2.13.0 $REQS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import optimum.onnxruntime, sentence_transformers" 2>/dev/null; then
  echo "hf-venv: up to date" >&2; exit 0
fi
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
export PIP_CACHE_DIR="$PWD/.ci/cache/hf-venv-pip"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
# The constraint keeps torch where it is whatever the two packages ask for.
"$VENV/bin/python" -m pip install -q $REQS "torch==2.13.0"
"$VENV/bin/python" -c "import optimum.onnxruntime, sentence_transformers, transformers; print('hf-venv: transformers', transformers.__version__)" >&2
echo "$WANT" > "$STAMP"
