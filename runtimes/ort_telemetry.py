"""ONNX Runtime's telemetry: off by default in bert-export.

Official ONNX Runtime builds for Linux and macOS (1.29 and later) carry Microsoft's 1DS telemetry
client (onnxruntime PR #27379). Unless told otherwise, importing ``onnxruntime`` creates
``$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/`` (default ``~/.cache/...``) with a
persistent ``deviceid`` and an SQLite queue ``onnxruntime.db`` of events (process information:
OS, interpreter path, CPU, memory, container type; then per session: the model's file and graph
name, producer, hashes, execution providers), uploaded to
``mobile.events.data.microsoft.com`` when the network allows. It is skipped on CI machines
(``CI``, ``GITHUB_ACTIONS``, ...), which is why it goes unnoticed in tests.

What the API allows: ``onnxruntime.disable_telemetry_events()`` (Python; ``DisableTelemetryEvents``
in C) only stops the later, non-essential events of an already initialised runtime; the device id
and the database are written when ``onnxruntime`` is imported. The only full opt-out is the
environment variable ``ORT_DISABLE_TELEMETRY=1`` set before that import (read once per process).

bert-export's users export and serve private models, so we set ``ORT_DISABLE_TELEMETRY=1`` as a
default when ``bert_export.runtimes`` is imported (before any of our modules imports onnxruntime)
and also call ``disable_telemetry_events()`` when we create a session, for programs that imported
onnxruntime before bert_export. A value the user set is never overridden: ``ORT_DISABLE_TELEMETRY=0``
restores ONNX Runtime's default (telemetry on). Child processes (the C++ consumer started from
Python) inherit the setting.
"""

from __future__ import annotations

import contextlib
import os

ENV = "ORT_DISABLE_TELEMETRY"


def default_off() -> None:
    """Set ``ORT_DISABLE_TELEMETRY=1`` unless the user chose a value (must run before ``import onnxruntime``)."""
    os.environ.setdefault(ENV, "1")


def disabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_session_events() -> None:
    """For an onnxruntime imported before us: stop its per-session events (model names, producers)."""
    if not disabled():
        return
    with contextlib.suppress(Exception):
        import onnxruntime as ort

        ort.disable_telemetry_events()
