"""What ``serve`` changes in PyTriton 0.5-0.7, each for a failure seen here; all applied per launch by the Supervisor.

- **Sealed restrictions** (``seal_restrictions``, ``NoLogLevelCheck``): no access token on tritonserver's
  command line, where every local user can read it.
- **Instances wait for each other** (``lengthen_handshake``). With several model instances, PyTriton's
  proxy model starts a handshake server in instance 0 and every other instance waits for its socket for
  1 s (``get_config_from_handshake_server(..., timeout_s=1.0)``). Triton loads the instances in
  parallel, and instance 0 first imports PyTriton and starts its tensor store, so on a loaded 2-core
  machine instance 1 gives up first: "failed to load all models", tritonserver exits. Seen in CI on the
  restart after a crash (a 0.2 s wait out of the 1 s was logged on an idle machine). The same wait also
  retries a refused connection: instance 0's ``asyncio.start_unix_server`` binds the socket (the file that
  instance 1 polls for) before it listens, and a connect in between is refused at once, which the timeout
  does not cover. That race failed about one ``serve`` start in ten on an idle 2-core machine (two of 21
  starts, one of them twice in a row; CI saw it as "failed to load all models").
- **A tritonserver that exits while starting fails at once** (``wait_started``): PyTriton polls
  readiness for 120 s whether or not the process is still there, so one failed start cost two minutes.
- **No core file** (``no_core_files``): a request that crashes tritonserver would otherwise leave an
  ~800 MB ``core`` in the current directory each time (where ``ulimit -c`` allows it), filling a disk
  five times a minute at the restart limit.

These touch PyTriton internals (``_triton_server_config``, ``_wait_for_server``, the model store it
writes); nvidia-pytriton is pinned below 0.8 for that reason, and tests/test_serve_hardening.py
exercises each one against the real server.
"""

from __future__ import annotations

import contextlib
import re
import resource
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError

SEALED_KEY = "bert-export:sealed"  # a header name cannot hold ':' (HTTP/1 ends the name there; gRPC refuses it)
SEALED = "sealed\x01no-client-can-send-this"  # nor can a gRPC metadata value hold a control character
HANDSHAKE_TIMEOUT_S = 120.0
HANDSHAKE_RETRY_S = 0.01  # between refused connects (instance 0 is between bind() and listen())
HANDSHAKE_PATCH = f"""

# bert-export: instances other than 0 wait longer than PyTriton's 1 s for instance 0's handshake server, and
# past a refused connect: its socket file exists from bind() until listen() (Triton loads instances in
# parallel; see bert_export/serving/pytriton_fixes.py).
_pytriton_get_config_from_handshake_server = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s={HANDSHAKE_TIMEOUT_S}):  # noqa: F811
    deadline = time.time() + max(timeout_s, {HANDSHAKE_TIMEOUT_S})
    while True:
        try:
            return _pytriton_get_config_from_handshake_server(socket_path, timeout_s=max(deadline - time.time(), 0.001))
        except (ConnectionRefusedError, FileNotFoundError):  # bound, not listening (or not yet bound again)
            if time.time() >= deadline:
                raise
            time.sleep({HANDSHAKE_RETRY_S})
"""


def seal_restrictions(triton: Any) -> None:
    """Keep Triton's restricted APIs closed without a secret on tritonserver's command line.

    PyTriton passes its random access token in argv (``--http-restricted-api=...:triton-access-token=TOKEN``),
    readable by every local user in ``/proc/PID/cmdline``. Here the expected value becomes one that no
    HTTP or gRPC client can send (a header value cannot hold a line break), so the restricted APIs
    (model-repository, shared-memory, logging, trace, statistics unless opened) are closed to everyone
    and there is no secret left to read. PyTriton needs none of them: the model is loaded at start-up
    from the local model store, and its verbose-log check is skipped (``NoLogLevelCheck``).
    """
    config = triton._triton_server_config  # noqa: SLF001 - PyTriton 0.5-0.7 builds argv from this mapping
    for key in ("http-restricted-api", "grpc-restricted-protocol"):
        value = config[key]  # None when not set (nothing restricted)
        if value:
            apis, _, header = str(value).rpartition(":")
            config[key] = f"{apis}:{SEALED_KEY}={SEALED}"


class NoLogLevelCheck:
    """Stands in for PyTriton's check of Triton's log level (through the logging API, sealed here)."""

    def check(self, skip_update: bool = False) -> None:
        return None


def lengthen_handshake(model_store: Path) -> None:
    """Give every model's copy of PyTriton's ``communication.py`` the longer handshake wait.

    The copy in the model store is what the backend stub imports (``model.py`` takes the function from
    it by name at import, after this wrapper has replaced it). One that lacks the function (another
    PyTriton) is a clear error rather than a server that loads one instance in two."""
    copies = sorted(model_store.glob("*/*/communication.py"))
    if not copies:
        raise BertExportError(f"PyTriton wrote no proxy model into {model_store}; install nvidia-pytriton>=0.5,<0.8")
    for path in copies:
        text = path.read_text()
        if "def get_config_from_handshake_server(" not in text:
            raise BertExportError(f"this nvidia-pytriton's proxy model has no handshake ({path}); install <0.8")
        if HANDSHAKE_PATCH not in text:
            path.write_text(text + HANDSHAKE_PATCH)


# Our own requests to tritonserver's loopback ports: never through an HTTP proxy from the environment
# (urllib honours $http_proxy for 127.0.0.1 unless $no_proxy lists it; readiness would then never be seen).
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_started(triton: Any, http_port: int, timeout_s: float = 120.0) -> None:
    """Stands in for PyTriton's ``_wait_for_server``: the same readiness poll (tritonserver's private HTTP
    port), but a process that has exited ends the wait at once, with what it said (``failure_line``)."""
    server = triton._triton_server  # noqa: SLF001
    deadline = time.monotonic() + timeout_s
    while True:
        if not server.is_alive():
            raise BertExportError(f"tritonserver exited while starting{said(failure_line(triton))}")
        with contextlib.suppress(OSError):
            with LOOPBACK.open(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        if time.monotonic() > deadline:
            raise BertExportError(f"tritonserver was not ready within {timeout_s:.0f} s{said(failure_line(triton))}")
        time.sleep(0.1)


def failure_line(triton: Any) -> str:
    """The line tritonserver printed that says most about a failure (PyTriton keeps its log in memory): the
    first model-load failure (``failed to load '<model>' ...: <reason>``) when there is one, since the last
    line is then only "failed to load all models" (CI once showed just that), else the last non-empty line."""
    server = getattr(triton, "_triton_server", None)
    lines = [ln.strip() for ln in (server.logs() if server is not None else "").splitlines() if ln.strip()]
    why = next((ln for ln in lines if "failed to load '" in ln), None)
    return gist(why or lines[-1]) if lines else ""


FAILURE_CHARS = 300  # an error line's length; a traceback's head is cut to fit its exception
TRACEBACK = "Traceback (most recent call last):"
EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b.*")


def gist(line: str) -> str:
    """A model's load failure holds the stub's Python traceback on one line (line breaks escaped as ``\\n``),
    and its reason is the exception at the end, past any cut to the line's first characters: keep the line's
    head before the traceback and that exception ("...: Traceback ... ConnectionRefusedError: [Errno 111] ...")."""
    head, _, trace = line.partition(TRACEBACK)
    parts = [p.rstrip().rstrip('"') for p in trace.replace("\\n", "\n").splitlines()]  # unindented: not a frame
    exception = next((p for p in reversed(parts) if EXCEPTION.match(p)), "")
    if not exception:
        return line[:FAILURE_CHARS]
    tail = f"{TRACEBACK} ... {exception}"[: FAILURE_CHARS - 20]
    return head[: FAILURE_CHARS - len(tail)] + tail


def said(line: str) -> str:
    """The tail of an error about tritonserver: what it said (``failure_line``), or how to see its log."""
    return f"; it said: {line}" if line else "; rerun with --verbose to see its log"


@contextlib.contextmanager
def no_core_files() -> Iterator[None]:
    """Around the launch: tritonserver (and the stubs it starts) inherit a core-file limit of 0."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
