#!/usr/bin/env bash
# OpenVINO + NNCF (the `openvino` extra): --runtime openvino, tests/test_openvino.py, tests/test_int8_modes.py.
# Constrained to the torch/onnxruntime/numpy already in ./.venv so that nncf never pulls another build.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .ci/cache/openvino
.venv/bin/python -m pip freeze | grep -iE '^(torch|onnxruntime|onnx|numpy|scipy|transformers)==' > .ci/cache/openvino/constraints.txt || true
.venv/bin/python -m pip install -q --cache-dir .ci/cache/openvino/pip -c .ci/cache/openvino/constraints.txt -e ".[openvino]"
.venv/bin/python -c "import openvino, nncf; print('openvino', openvino.get_version(), 'nncf', nncf.__version__)"
