#!/usr/bin/env bash
# ExecuTorch + torchao (the `executorch` extra): --runtime executorch, tests/test_executorch.py,
# benchmarks/bench_executorch.py. executorch 1.5 declares no torch pin and resolves beside torch==2.13.0,
# so it shares ./.venv; constrained to the torch/onnxruntime/numpy already there so that nothing
# pulls another build (a torch change here would fail the install, not silently swap torch).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .ci/cache/executorch
.venv/bin/python -m pip freeze | grep -iE '^(torch|onnxruntime|onnx|numpy|scipy|transformers|protobuf|sympy)==' > .ci/cache/executorch/constraints.txt || true
.venv/bin/python -m pip install -q --cache-dir .ci/cache/executorch/pip -c .ci/cache/executorch/constraints.txt -e ".[executorch]"
.venv/bin/python -c "import torch, executorch.runtime, torchao.quantization.pt2e; from importlib.metadata import version; print('executorch', version('executorch'), 'torch', torch.__version__)"
