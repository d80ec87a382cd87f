"""Small helpers every package needs (``models`` is the one package all the others import).

``first_line`` turns a library's multi-line exception into the short cause our one-line errors quote;
``quiet_loggers`` silences libraries that log every pass while our rich step line is the user's view;
``versions`` is what manifests and benchmark results record about the software that made them.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections.abc import Iterator
from importlib import metadata


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (or its type name when empty), at most ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR, root: bool = False) -> Iterator[None]:
    """Raise the named loggers (and the root logger when ``root``) to ``level``, then restore them."""
    loggers = [logging.getLogger(n) for n in names] + ([logging.getLogger()] if root else [])
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, levels):
            lg.setLevel(old)


VERSIONED = (
    "bert-export",
    "torch",
    "transformers",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxscript",
    "onnx-ir",
    "tokenizers",
    "tensorrt",
    "numpy",
)


def versions() -> dict[str, str]:
    """Python and the installed versions of the libraries that shape a graph or a timing."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out
