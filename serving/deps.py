"""The ``serve`` extra: checked once, before any work, with one line naming the fix."""

from __future__ import annotations

import importlib.util

from bert_export.models import BertExportError

FIX = "pip install bert-export[serve]"
# nvidia-pytriton pins numpy<2 (for its backend stub only, which gets its own numpy<2 venv: stubenv.py),
# so it is not in the extra, where pip would silently downgrade a NumPy 2 environment.
PYTRITON_FIX = "pip install --no-deps 'nvidia-pytriton>=0.5,<0.8'"


def missing(*, server: bool) -> list[str]:
    """Distributions of the serve extra that cannot be imported (``server``: PyTriton too)."""
    wanted = {"tritonclient": "tritonclient.grpc", "protobuf": "google.protobuf.text_format"}
    if server:
        wanted["nvidia-pytriton"] = "pytriton.triton"
    absent = []
    for dist, module in wanted.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            absent.append(dist)
    return absent


def require_serve(*, server: bool) -> None:
    """Raise one ``BertExportError`` line when the serve extra is not installed."""
    absent = missing(server=server)
    if absent:
        raise BertExportError(
            f"this command needs {', '.join(absent)} (the serve extra), which is not installed; run: "
            + " && ".join([FIX] + [PYTRITON_FIX] * ("nvidia-pytriton" in absent))
        )
