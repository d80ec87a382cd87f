"""Validation on the user's own checkpoint and data: task metrics, bundle comparison, CI reports.

    from bert_export.evaluation import validate_data, compare_bundles

Names are imported on first use, so the CLI can read ``DEFAULT_MAX_METRIC_DROP`` at start-up
without loading torch and the runtimes.
"""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_MAX_METRIC_DROP = 0.5  # points; the default metric gate of validate/compare

_NAMES = {
    "Dataset": "data",
    "Example": "data",
    "read_data": "data",
    "EvalReport": "report",
    "GateResult": "report",
    "MetricRow": "scoring",
    "compare_bundles": "run",
    "validate_data": "run",
    "validate_stored": "run",
}
__all__ = sorted([*_NAMES, "DEFAULT_MAX_METRIC_DROP"])


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
