"""bert_export.runtimes

``from bert_export.runtimes import embed``: texts (or a file of them) to embeddings (runtimes/corpus.py).
"""

from typing import Any

from bert_export.runtimes.ort_telemetry import default_off as _telemetry_default_off

_telemetry_default_off()  # before any module here imports onnxruntime: see ort_telemetry.py


def __getattr__(name: str) -> Any:
    """``embed`` on first use, so that importing the package does not load onnxruntime or transformers."""
    if name == "embed":
        from bert_export.runtimes.corpus import embed

        return embed
    raise AttributeError(f"module 'bert_export.runtimes' has no attribute {name!r}")
