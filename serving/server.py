"""``bert-export serve``: a real Triton Inference Server (through PyTriton) with the bundle's runner inside.

PyTriton starts the ``tritonserver`` binary it ships (CPU-only machines included) with one
Python-backend proxy model; Triton does HTTP/gRPC, dynamic batching, health/readiness and
Prometheus metrics, and hands each formed batch to ``TextModel`` in this process (the bundle's own
tokenizer, ``make_runner``'s runner, ``runtimes/postprocess.py``).

Model ``NAME``: inputs ``TEXT`` (or ``QUESTION`` + ``CONTEXT`` for qa), BYTES, shape [-1, 1];
outputs ``JSON`` (``run --json``'s line for that item), ``NOTE`` (a truncation note or "") and
``ERROR`` (one line, or ""). Why errors travel in ``ERROR``: a non-decoupled PyTriton model answers
a whole dynamic batch with one status, so failing one bad item would fail the other clients'
requests batched with it. Requests Triton itself rejects (missing input, wrong dtype or shape)
still get Triton's error status.

Hardening (docs/serving.md, "What one request cannot do"): the public HTTP port belongs to our front
proxy (``front.py``: body size and JSON depth bounded, readiness), tritonserver's HTTP is on a private
loopback port, a ``Supervisor`` restarts a tritonserver that dies, the model is loaded at
tritonserver's start-up (ready means loaded), no access token on its command line, request memory
in /dev/shm narrowed to 0600, PyTriton's workspace in a private temporary folder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.serving.deps import require_serve
from bert_export.serving.pytriton_fixes import (
    LOOPBACK,
    NoLogLevelCheck,
    failure_line,
    lengthen_handshake,
    no_core_files,
    said,
    seal_restrictions,
    wait_started,
)
from bert_export.serving.textmodel import MAX_TEXT_CHARS, TextModel, warn_at_start

OUTPUTS = ("JSON", "NOTE", "ERROR")


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 32
    max_queue_delay_ms: float = 2.0
    name: str | None = None
    runtime: str = "ort"
    threads: int | None = None
    instances: int = 2  # PyTriton model instances: threads of this process, each its own batch in flight
    max_text_chars: int = MAX_TEXT_CHARS
    open_statistics: bool = False  # PyTriton guards /v2/models/*/stats with a random token; this opens it (read-only)
    max_request_bytes: int = 8 * 1024 * 1024  # the front proxy refuses larger HTTP bodies (413)
    max_json_depth: int = 32  # ... and deeper JSON (400): deep nesting crashes tritonserver's parser
    verbose: bool = False


def model_name(bundle_path: Path, name: str | None = None) -> str:
    """A Triton model name: ``name`` if given, else the bundle directory's name made safe."""
    raw = name or Path(bundle_path).resolve().name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", raw).strip(".") or "model"
    if name is not None and safe != name:
        raise BertExportError(
            f"--name {name!r} is not a valid Triton model name; use letters, digits, '_', '-' and '.'"
        )
    return safe


def _check(opts: ServeOptions) -> None:
    for label, port in (("--port", opts.port), ("--grpc-port", opts.grpc_port), ("--metrics-port", opts.metrics_port)):
        if not 0 < port < 65536:
            raise BertExportError(f"{label} {port} is not a TCP port (1..65535)")
    if len({opts.port, opts.grpc_port, opts.metrics_port}) != 3:
        raise BertExportError("--port, --grpc-port and --metrics-port must differ")
    if not 1 <= opts.max_batch <= 1024:
        raise BertExportError(f"--max-batch must be 1..1024, got {opts.max_batch}")
    if not 1 <= opts.instances <= 16:
        raise BertExportError(f"--instances must be 1..16, got {opts.instances}")
    if opts.max_queue_delay_ms < 0:
        raise BertExportError("--max-queue-delay-ms must be >= 0")
    if opts.max_text_chars < 1:
        raise BertExportError("--max-text-chars must be >= 1")
    if not 1024 <= opts.max_request_bytes <= 1 << 30:
        raise BertExportError("--max-request-mb must be between 0.001 and 1024")


def infer_callable(model: TextModel) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's callable: a list of requests (each rows of inputs) in, one dict of outputs per request."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        items, rows = [], []
        for request in requests:
            arrays = {n: np.asarray(request[n]).reshape(-1) for n in model.input_names if n in request}
            count = max((a.shape[0] for a in arrays.values()), default=1)
            rows.append(count)
            for r in range(count):
                items.append({n: a[r] for n, a in arrays.items() if r < a.shape[0]})
        replies = iter(model.predict(items))
        responses = []
        for count in rows:
            chunk = [next(replies) for _ in range(count)]
            responses.append(
                {
                    out: np.array([[getattr(rep, out.lower()).encode("utf-8")] for rep in chunk], dtype=object)
                    for out in OUTPUTS
                }
            )
        return responses

    return infer


@contextmanager
def running(
    bundle_path: str | Path, opts: ServeOptions, say: Callable[[str], None] | None = None
) -> Iterator[Supervisor]:
    """Start the server (blocking until the model is loaded), yield its ``Supervisor``, stop everything on exit.

    Nothing is left behind: PyTriton's workspace lives in a private temporary folder (mode 0700, not
    ``~/.cache/pytriton``, so a read-only HOME works) removed on exit, and the process umask is 077
    while serving, so the request memory Triton's Python backend maps in ``/dev/shm`` is 0600.
    """
    require_serve(server=True)
    _check(opts)
    from bert_export.serving.stubenv import stub_python_env

    stub_python_env()  # the backend stub's environment is ready (else one line naming the fix), before any work
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner
    from bert_export.serving.front import FrontProxy

    b = load_bundle(bundle_path)
    tokenizer = bundle_tokenizer(b)
    if tokenizer is None:
        raise BertExportError(
            f"{bundle_path} has no tokenizer files, so it cannot take text; export it from a model "
            "directory that has tokenizer.json or vocab.txt"
        )
    name = model_name(Path(bundle_path), opts.name)
    _ports_free(opts)
    _quiet_pytriton(opts.verbose)
    front = FrontProxy(
        opts.host,
        opts.port,
        upstream_port=_free_loopback_port(),
        model=name,
        max_body=opts.max_request_bytes,
        max_depth=opts.max_json_depth,
    )
    front.start()  # the public HTTP port is ours from here on, across tritonserver restarts
    old_umask = os.umask(0o077)
    sweep_stale()
    root = Path(tempfile.mkdtemp(prefix=f"bert-export-serve-{os.getpid()}-"))
    runner = None
    supervisor: Supervisor | None = None
    try:
        made = make_runner(b, opts.runtime, opts.threads)
        made.activate()
        runner = made
        model = TextModel(b, made, tokenizer, max_text_chars=opts.max_text_chars)
        warn_at_start(model)  # untrained head / --random-init: loud at start (issue 20; textmodel.py)
        supervisor = Supervisor(name, opts, model, front, root, say or (lambda line: None))
        supervisor.first_start()
        yield supervisor
    finally:
        try:
            if supervisor is not None:
                supervisor.stop()
        finally:
            front.stop()
            if runner is not None:
                runner.deactivate()
            shutil.rmtree(root, ignore_errors=True)
            os.umask(old_umask)


def _ports_free(opts: ServeOptions) -> None:
    """gRPC and metrics ports are tritonserver's: refuse a taken one with one line before starting it.

    (A second ``serve`` on the same ports used to get a 403 traceback: gRPC binds with SO_REUSEPORT, so
    the new tritonserver came up beside the old one and PyTriton then spoke to the old one.)"""
    for label, port in (("--grpc-port", opts.grpc_port), ("--metrics-port", opts.metrics_port)):
        with socket.socket(socket.AF_INET6 if ":" in opts.host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((opts.host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BertExportError(
                        f"port {port} on {opts.host} is already in use (another serve?); choose another with {label}"
                    ) from None
                raise BertExportError(f"cannot listen on {opts.host}:{port} ({label}): {exc.strerror}") from None


STALE = (
    (Path("/dev/shm"), re.compile(r"pytrtion(\d+)-")),  # the Python backend's regions, named after PyTriton's pid
    (Path(tempfile.gettempdir()), re.compile(r"bert-export-serve-(\d+)-")),  # our private workspaces
)


def sweep_stale(places: tuple[tuple[Path, re.Pattern[str]], ...] = STALE) -> list[Path]:
    """Remove what a killed ``serve`` (SIGKILL, the OOM killer) could not: request memory and workspaces that
    belong to this user and name a process that no longer exists. Returns what was removed."""
    removed = []
    for folder, pattern in places:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                match = pattern.match(entry.name)
                if not match or _pid_alive(int(match.group(1))):
                    continue
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quiet_pytriton(verbose: bool) -> None:
    """PyTriton's own log lines only with --verbose (tritonserver's are switched in ``Supervisor._launch``)."""
    log = logging.getLogger("pytriton")
    log.propagate = False
    log.handlers = [logging.StreamHandler()] if verbose else [logging.NullHandler()]
    log.setLevel(logging.INFO if verbose else logging.CRITICAL)


class Supervisor:
    """One tritonserver (through PyTriton) behind the front proxy, restarted when it dies.

    The model is loaded at tritonserver's start-up (PyTriton's local-model-store policy), so Triton's
    own readiness over gRPC and HTTP means "model loaded"; the proxy's ``/v2/health/ready`` is also
    off while a restart is under way. Restarts are bounded: ``MAX_RESTARTS`` within ``RESTART_WINDOW_S``.
    """

    MAX_RESTARTS = 5
    RESTART_WINDOW_S = 60.0

    def __init__(
        self, name: str, opts: ServeOptions, model: TextModel, front: Any, root: Path, say: Callable[[str], None]
    ) -> None:
        self.name, self.opts, self.model, self.front, self.root, self.say = name, opts, model, front, root, say
        self.triton: Any = None
        self.shm: ShmGuard | None = None
        self.generation = 0
        self.restarts: list[float] = []

    def start(self) -> None:
        self.generation += 1
        self.triton = self._launch(self.root / f"triton-{self.generation}")
        self.front.ready.set()

    def first_start(self) -> None:
        """The first start, tried once more when it fails: one line says so, and a second failure is the error.
        Same policy as ``restart`` (a failed start is tried again). The failure that prompted it (about one start
        in ten, "failed to load all models") was the handshake race that ``lengthen_handshake`` now retries; this
        stays for load failures that a fresh start gets past."""
        try:
            self.start()
        except BertExportError as exc:
            self.stop()
            self.say(f"{exc}; trying once more")
            self.start()

    def alive(self) -> bool:
        return self.triton is not None and bool(self.triton.is_alive())

    def restart(self) -> None:
        """Replace a dead tritonserver (same ports) within seconds; a start that fails is tried again, within
        the same bound; one line when it keeps dying."""
        why = f"tritonserver stopped unexpectedly{f' ({log})' if (log := self._log_tail()) else ''}"
        while True:
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW_S] + [now]
            self.stop()
            if len(self.restarts) > self.MAX_RESTARTS:
                raise BertExportError(
                    f"tritonserver died {len(self.restarts)} times within {self.RESTART_WINDOW_S:.0f} s; giving up"
                    f" (last: {why})" + ("" if self.opts.verbose else "; rerun with --verbose to see its log")
                )
            self.say(f"{why}; restarting it")
            try:
                self.start()
                return
            except BertExportError as exc:
                why = str(exc)

    def stop(self) -> None:
        self.front.ready.clear()
        triton, self.triton = self.triton, None
        if triton is not None:
            with contextlib.suppress(Exception):  # already stopped by PyTriton's exit callback after a crash
                triton.stop()
        if self.shm is not None:
            self.shm.stop()
        shutil.rmtree(self.root / f"triton-{self.generation}", ignore_errors=True)

    def _log_tail(self) -> str:
        return failure_line(self.triton)

    def _launch(self, workspace: Path) -> Any:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy

        from bert_export.serving.stubenv import server_environment

        opts = self.opts
        config = TritonConfig(
            http_address="127.0.0.1",  # private: the front proxy owns the public HTTP port
            http_port=self.front.upstream_port,
            grpc_address=opts.host,
            grpc_port=opts.grpc_port,
            metrics_address=opts.host,
            metrics_port=opts.metrics_port,
            exit_timeout_secs=5,
            log_verbose=1 if opts.verbose else 0,
        )
        triton = Triton(
            config=config,
            workspace=workspace,
            # the model store is written before tritonserver starts, which loads it at start-up: ready means loaded
            triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True),
            **_security(opts),
        )
        seal_restrictions(triton)
        triton._initialize_server()  # noqa: SLF001 - PyTriton 0.5-0.7: its log goes to stdout unless told
        triton._triton_server._verbose = opts.verbose  # noqa: SLF001
        triton._log_level_checker = NoLogLevelCheck()  # noqa: SLF001 - it reads the (now sealed) logging API
        triton._wait_for_server = lambda: wait_started(triton, self.front.upstream_port)  # noqa: SLF001
        self.shm = ShmGuard(triton._python_backend_config["shm-region-prefix-name"])  # noqa: SLF001
        self.shm.start()
        try:
            triton.bind(
                model_name=self.name,
                infer_func=[infer_callable(m) for m in self.model.replicas(self.opts.instances)],
                inputs=[
                    Tensor(name=n, dtype=bytes, shape=(1,), optional=n in self.model.task.triton_optional_inputs)
                    for n in self.model.input_names
                ],
                outputs=[Tensor(name=n, dtype=bytes, shape=(1,)) for n in OUTPUTS],
                config=ModelConfig(
                    max_batch_size=opts.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=int(opts.max_queue_delay_ms * 1000)),
                ),
                strict=False,
            )
            lengthen_handshake(triton._workspace.model_store_path)  # noqa: SLF001
            with server_environment(), no_core_files():
                triton.run()
            self.shm.settle()
            self.shm.sweep()  # every region the model's load created is 0600 before the proxy says ready
        except BaseException as exc:
            wrap = isinstance(exc, Exception) and not isinstance(exc, BertExportError)  # ours already says why
            tail = failure_line(triton) if wrap else ""  # read while the server is still there
            with contextlib.suppress(Exception):
                triton.stop()
            self.shm.stop()
            if wrap:
                raise BertExportError(f"tritonserver did not start ({type(exc).__name__}: {exc}){said(tail)}") from exc
            raise
        return triton

    def summary(self) -> tuple[float, float] | None:
        """Triton's success and failure counts for the model (all protocols), from its metrics; None if unreadable."""
        try:
            with LOOPBACK.open(f"http://127.0.0.1:{self.opts.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode("utf-8", "replace")
        except OSError:
            return None
        found = {"success": 0.0, "failure": 0.0}
        for line in text.splitlines():
            for kind in found:
                if line.startswith(f"nv_inference_request_{kind}{{") and f'model="{self.name}"' in line:
                    found[kind] += float(line.rsplit(" ", 1)[1])
        return found["success"], found["failure"]


class ShmGuard:
    """Makes the Python backend's request memory in ``/dev/shm`` private (0600) and removes it on stop.

    Triton's Python backend creates its regions (``/dev/shm/<prefix>...``, the request and response
    tensors) through Boost.Interprocess, which ``fchmod``s them to 0644 whatever the umask, so another
    local user could read request text. A thread narrows each region to 0600 as soon as it appears
    (checked every few milliseconds while tritonserver starts, then once a second), and every region with
    our prefix is removed when the server stops (tritonserver leaves them behind). The moment between
    creation and the chmod remains: docs/serving.md reports it upstream with the crash.
    """

    SHM = Path("/dev/shm")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-shm", daemon=True)
        self._fast_until = time.monotonic() + 600.0

    def start(self) -> None:
        self._thread.start()

    def sweep(self) -> list[Path]:
        found = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.SHM):
                if entry.name.startswith(self.prefix):
                    path = Path(entry.path)
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mode & 0o077:
                            os.chmod(path, 0o600, follow_symlinks=False)
                    found.append(path)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sweep()
            self._stop.wait(0.002 if time.monotonic() < self._fast_until else 1.0)

    def settle(self) -> None:
        """Tritonserver is up: from now on a slow check suffices (new regions appear only at model load)."""
        self._fast_until = 0.0

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for path in self.sweep():
            with contextlib.suppress(OSError):
                path.unlink()


def _security(opts: ServeOptions) -> dict[str, Any]:
    """PyTriton >= 0.7 protects shared-memory, model-repository, statistics, trace and logging with a
    random access token (kept: nobody can unload the model); ``open_statistics`` lifts it for statistics."""
    try:
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, TritonSecurityConfig
    except ImportError:  # older PyTriton: no restrictions to lift
        return {}
    if not opts.open_statistics:
        return {}
    return {
        "security_config": TritonSecurityConfig(
            restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"]
        )
    }


def serve(bundle_path: str | Path, opts: ServeOptions, say: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop Triton cleanly (in-flight requests get exit_timeout_secs).

    ``say`` gets our own lines: ready with the endpoints, a restart, and a per-minute summary of requests
    when there were any. A tritonserver that dies is restarted on the same ports."""
    say = say or (lambda line: None)
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running(bundle_path, opts, say) as supervisor:
            say(ready_line(supervisor.name, opts))
            last, seen = time.monotonic(), supervisor.summary() or (0.0, 0.0)
            while not stop.wait(0.5):
                if not supervisor.alive():
                    supervisor.restart()
                    say(f"ready again: {supervisor.name}")
                    seen = (0.0, 0.0)
                if time.monotonic() - last >= SUMMARY_EVERY_S:
                    last, seen = time.monotonic(), _summarise(supervisor, seen, say)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


SUMMARY_EVERY_S = 60.0


def _summarise(supervisor: Supervisor, seen: tuple[float, float], say: Callable[[str], None]) -> tuple[float, float]:
    now = supervisor.summary()
    if now is None:
        return seen
    refused = supervisor.front.stats.take()[1]
    ok, failed = now[0] - seen[0], now[1] - seen[1]
    if ok or failed or refused:
        say(f"last minute: {ok:.0f} requests answered, {failed:.0f} failed in Triton, {refused} refused by the front")
    return now


def ready_line(name: str, opts: ServeOptions) -> str:
    return (
        f"ready: model {name}: http://{opts.host}:{opts.port}/v2/models/{name}/infer, gRPC {opts.host}:{opts.grpc_port}, "
        f"metrics http://{opts.host}:{opts.metrics_port}/metrics (Ctrl-C or SIGTERM stops)"
    )
