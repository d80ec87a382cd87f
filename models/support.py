"""Small helpers every package needs (``models`` is the one package all the others import).

``first_line`` turns a library's multi-line exception into the short cause our one-line errors quote;
``quiet_loggers`` silences libraries that log every pass while our rich step line is the user's view;
``check_threads`` is the one bound on ``--threads`` for every runtime and command;
``versions`` is what manifests and benchmark results record about the software that made them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
from collections.abc import Iterator
from importlib import metadata

from bert_export.models.errors import BertExportError

# C++ libraries print where an error was raised before what it says: OpenVINO as lines of their
# own ("Exception from src/inference/src/cpp/core.cpp:84:", "Check 'false' failed at
# src/frontends/common/src/frontend.cpp:47:"), ONNX Runtime inline ("/onnxruntime_src/.../graph.cc:1407
# onnxruntime::Graph::Graph(<300 characters of signature>) status.IsOK() was false. [ONNXRuntimeError]
# : 1 : FAIL : tensorprotoutils.cc:2920 CopySparseData Sparse tensor: ..."). Cut at 300 characters,
# such a message showed the location and never the cause.
_LOCATION_LINE = re.compile(r"(?:Exception from|Check '.*' failed at) \S+:\d+:?")
_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_SOURCE = re.compile(r"(?:[\w.-]*/)*[\w.-]+\.(?:cc|cpp|cu|h|hpp):\d+ ")
# "void* onnxruntime::BFCArena::AllocateRawInternal(" / "onnxruntime::Graph::Graph(" / "Compute("
_FUNCTION = re.compile(r"(?:(?:[\w:<>*&~]+ ){0,3}[\w<>~]*::[\w:<>~]+|[\w<>~]+)\(")
_WAS_FALSE = re.compile(r".{0,200}? was false\.\s*")


def _after_parens(text: str, start: int) -> int:
    """The index after the parenthesis closing the one just before ``start`` (the end when unclosed)."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    return len(text)


def _strip_sources(text: str) -> str:
    """ONNX Runtime's ``file.cc:LINE function(signature) [with ...] const cond was false.`` prefixes, removed."""
    kept, pos = [], 0
    while (m := _SOURCE.search(text, pos)) is not None:
        kept.append(text[pos : m.start()])
        rest = m.end()
        if function := _FUNCTION.match(text, rest):
            rest = _after_parens(text, function.end())
            rest += len(" const") if text.startswith(" const", rest) else 0
        else:  # a bare function name: "CopySparseData Sparse tensor: ..."
            rest = text.find(" ", rest) + 1 or len(text)
        if text.startswith(" [with", rest):
            rest = text.find("]", rest) + 1 or len(text)
        while text.startswith(" ", rest):
            rest += 1
        if condition := _WAS_FALSE.match(text, rest):
            rest = condition.end()
        pos = rest
    return "".join(kept) + text[pos:]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The cause in ``exc``'s message, as one line of at most ``limit`` characters (its type name when empty).

    The message's first line, without the source locations C++ libraries (ONNX Runtime, OpenVINO)
    print before the cause; when whole lines were locations, the lines after them are joined.
    """
    text = _ORT_STATUS.sub("", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    kept = [ln for ln in lines if not _LOCATION_LINE.fullmatch(ln)]
    line = ": ".join(kept) if len(kept) < len(lines) else (kept[0] if kept else "")
    return (" ".join(_strip_sources(line).split()) or type(exc).__name__)[:limit]


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


def max_threads() -> int:
    """The most intra-op threads any runtime is given: this machine's CPU cores (os.cpu_count())."""
    return os.cpu_count() or 1


def check_threads(threads: int | None) -> int | None:
    """``threads`` when it is None (the runtime's default) or 1..cores; one-line error otherwise.

    Every runtime and command goes through this: ONNX Runtime segfaults at 100000 intra-op
    threads, runs for minutes ignoring SIGTERM at 3000, and took -5 without a word.
    """
    if threads is None:
        return None
    if type(threads) is not int or not 1 <= threads <= max_threads():
        raise BertExportError(
            f"--threads {threads!r} is out of range: pass 1 to {max_threads()} (this machine's CPU cores), "
            f"or leave it out for the runtime's default"
        )
    return threads
