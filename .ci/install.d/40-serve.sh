#!/usr/bin/env bash
# Serving on Triton (tests/test_serving.py): the `serve` extra into ./.venv, without letting it
# change the rest of the environment, and the numpy<2 companion venv for PyTriton's backend stub.
# - tritonclient[grpc,http] as the extra says (protobuf<7 and ml-dtypes<=0.5.4 come with it);
# - nvidia-pytriton with --no-deps plus its other requirements: its `numpy<2` pin is for the
#   backend stub only, which gets numpy<2 in its own companion venv (serving/stubenv.py), so the
#   test suite keeps the numpy the base install chose;
# - `python -m bert_export.serving.stubenv` creates that companion venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PIP_CACHE_DIR="$PWD/.ci/cache/serve/pip"
mkdir -p "$PIP_CACHE_DIR"
PIP=(.venv/bin/python -m pip install -q)
"${PIP[@]}" "tritonclient[grpc,http]>=2.40"
"${PIP[@]}" --no-deps "nvidia-pytriton>=0.5,<0.8"
"${PIP[@]}" "pyzmq>=23.0" "sh>=1.14" "typing_inspect>=0.6.0" "wrapt>=1.11" "typer>=0.9.0" "importlib_metadata>=7.0.1" "grpcio>=1.64.3"
.venv/bin/python -m bert_export.serving.stubenv
.venv/bin/python -c "import pytriton.triton, tritonclient.grpc.model_config_pb2, tritonclient.http"
