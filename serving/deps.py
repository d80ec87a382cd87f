"""The ``serve`` extra: checked once, before any work, with one line naming the fix."""

from __future__ import annotations

import importlib.util

from bert_export.models import BertExportError

FIX = "pip install bert-export[serve]"


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
            f"this command needs {', '.join(absent)} (the serve extra), which is not installed; run: {FIX}"
        )
