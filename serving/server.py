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
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.serving.deps import require_serve
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
    instances: int = 1
    max_text_chars: int = MAX_TEXT_CHARS
    open_statistics: bool = False  # PyTriton guards /v2/models/*/stats with a random token; this opens it (read-only)
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
    if opts.max_queue_delay_ms < 0:
        raise BertExportError("--max-queue-delay-ms must be >= 0")
    if opts.max_text_chars < 1:
        raise BertExportError("--max-text-chars must be >= 1")


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
def running(bundle_path: str | Path, opts: ServeOptions) -> Iterator[Any]:
    """Start the server (blocking until it is ready), yield the PyTriton ``Triton``, stop it on exit."""
    require_serve(server=True)
    _check(opts)
    from bert_export.serving.stubenv import stub_python_env

    stub_python_env()  # the backend stub's environment is ready (else one line naming the fix), before any work
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner

    b = load_bundle(bundle_path)
    tokenizer = bundle_tokenizer(b)
    if tokenizer is None:
        raise BertExportError(
            f"{bundle_path} has no tokenizer files, so it cannot take text; export it from a model "
            "directory that has tokenizer.json or vocab.txt"
        )
    name = model_name(Path(bundle_path), opts.name)

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from bert_export.serving.stubenv import server_environment

    config = TritonConfig(
        http_address=opts.host,
        http_port=opts.port,
        grpc_address=opts.host,
        grpc_port=opts.grpc_port,
        metrics_address=opts.host,
        metrics_port=opts.metrics_port,
        exit_timeout_secs=5,
        log_verbose=1 if opts.verbose else 0,
    )
    runner = make_runner(b, opts.runtime, opts.threads)
    runner.activate()
    try:
        model = TextModel(b, runner, tokenizer, max_text_chars=opts.max_text_chars)
        warn_at_start(model)  # untrained head / --random-init: loud at start (issue 20; textmodel.py)
        triton = Triton(config=config, **_security(opts))
        try:
            triton.bind(
                model_name=name,
                infer_func=infer_callable(model),
                inputs=[Tensor(name=n, dtype=bytes, shape=(1,)) for n in model.input_names],
                outputs=[Tensor(name=n, dtype=bytes, shape=(1,)) for n in OUTPUTS],
                config=ModelConfig(
                    max_batch_size=opts.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=int(opts.max_queue_delay_ms * 1000)),
                ),
                strict=False,
            )
            with server_environment():
                triton.run()
            yield triton
        finally:
            triton.stop()
    finally:
        runner.deactivate()


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


def serve(bundle_path: str | Path, opts: ServeOptions, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then stop Triton cleanly (in-flight requests get exit_timeout_secs)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with running(bundle_path, opts) as triton:
            if on_ready is not None:
                on_ready(model_name(Path(bundle_path), opts.name))
            while not stop.wait(0.5):
                if not triton.is_alive():
                    raise BertExportError("the Triton server stopped unexpectedly; rerun with --verbose to see its log")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
