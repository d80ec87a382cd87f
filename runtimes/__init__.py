"""bert_export.runtimes

``from bert_export.runtimes import embed``: texts (or a file of them) to embeddings (runtimes/corpus.py).
"""

from typing import Any

from bert_export.runtimes.ort_telemetry import default_off as _telemetry_default_off

_telemetry_default_off()  # before any module here imports onnxruntime: see ort_telemetry.py


# Attributes loaded on first use, so that importing the package does not load onnxruntime or
# transformers (the function ``embed``, not the task of that name).
_LAZY = {"embed": "bert_export.runtimes.corpus"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bert_export.runtimes' has no attribute {name!r}")
