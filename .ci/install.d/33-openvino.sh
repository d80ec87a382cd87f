#!/usr/bin/env bash
# OpenVINO in the main venv: tests/test_consumers.py reads the bundles' ONNX graphs with
# openvino.Core().read_model (every com.microsoft fused op included) and checks the f32 hint.
set -euo pipefail
cd "$(dirname "$0")/../.."
if .venv/bin/python -c "import openvino" 2>/dev/null; then
  echo "openvino: $(.venv/bin/python -c 'import openvino; print(openvino.__version__)')" >&2; exit 0
fi
PIP_CACHE_DIR="$PWD/.ci/cache/openvino" .venv/bin/python -m pip install -q "openvino>=2025.1"
