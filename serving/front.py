"""``serve``'s public HTTP port: a small reverse proxy in front of tritonserver, which listens on a private loopback port.

Why a proxy: one HTTP request can kill tritonserver today (about 600 KB of nested ``[`` in the JSON
body overflows the stack of its JSON parser; docs/serving.md has the upstream reproducer), and
Triton has no option that bounds a request's size or nesting. Here every request body is bounded
*before* it reaches tritonserver:

- size: at most ``max_body`` bytes (413), compressed bodies (``Content-Encoding: gzip``/``deflate``) are
  inflated here under the same bound and forwarded plain, so a small compressed body cannot grow past it;
- JSON nesting: at most ``max_depth`` levels of ``[``/``{`` outside strings (400), counted in the JSON
  part only (``Inference-Header-Content-Length`` marks where Triton's binary tensor data begins).

The proxy also owns readiness (``/v2/health/ready`` is 200 only while the model is loaded and
tritonserver is up: the supervisor in ``server.py`` sets ``ready``) and liveness (it answers while
this process lives, also during a restart of tritonserver). Everything else is forwarded as is,
keep-alive connections included; Triton's own access restrictions stay in force behind it.

aiohttp comes with ``tritonclient[http]`` (the serve extra).
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bert_export.models import BertExportError

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_JSON_DEPTH = 32  # an inference request is about 5 deep ({"inputs": [{"data": [[...]]}]})
BINARY_HEADER = "inference-header-content-length"
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


class Refused(Exception):
    """A request refused before tritonserver sees it: an HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def json_depth(data: bytes) -> int:
    """The deepest ``[``/``{`` nesting of JSON text, brackets inside strings ignored (vectorised: a body is MBs)."""
    if data.count(b"[") + data.count(b"{") == 0:
        return 0
    outside = _STRING.sub(b'""', data)
    steps = _OPEN[np.frombuffer(outside, dtype=np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip/deflate body inflated to at most ``limit`` bytes (``Refused`` past it or when it is not that encoding)."""
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15}.get(encoding)
    if wbits is None:
        raise Refused(415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Refused(400, f"the {encoding} body does not decompress: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Refused(413, f"the request body inflates past {limit} bytes (serve --max-request-mb)")
    return out


def check_body(body: bytes, headers: Any, max_body: int, max_depth: int) -> tuple[bytes, bool]:
    """The body to forward (inflated if it was compressed) and whether it was inflated; ``Refused`` when over a bound."""
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    inflated = encoding not in ("", "identity")
    if inflated:
        body = inflate(body, encoding, max_body)
    json_len = headers.get(BINARY_HEADER)
    try:
        head = body if json_len is None else body[: max(0, int(json_len))]
    except ValueError:
        raise Refused(400, f"{BINARY_HEADER} must be an integer") from None
    depth = json_depth(head)
    if depth > max_depth:
        raise Refused(400, f"the request's JSON nests {depth} levels deep; at most {max_depth} are accepted")
    return body, inflated


@dataclass
class Stats:
    """Requests seen by the proxy since the last summary (read and reset by the supervisor)."""

    forwarded: int = 0
    refused: int = 0
    unavailable: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[int, int, int]:
        with self.lock:
            out = (self.forwarded, self.refused, self.unavailable)
            self.forwarded = self.refused = self.unavailable = 0
        return out

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)


class FrontProxy:
    """The public HTTP listener (its own thread and event loop); ``upstream_port`` is tritonserver's loopback port."""

    def __init__(
        self,
        host: str,
        port: int,
        upstream_port: int,
        model: str,
        max_body: int = MAX_BODY_BYTES,
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.host, self.port, self.upstream_port, self.model = host, port, upstream_port, model
        self.max_body, self.max_depth = max_body, max_depth
        self.ready = threading.Event()
        self.stats = Stats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="serve-front", daemon=True)
        self._runner: Any = None
        self._session: Any = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the public port (one ``BertExportError`` line when it is taken) and start serving."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        except OSError as exc:
            self.stop()
            if exc.errno == errno.EADDRINUSE:
                raise BertExportError(
                    f"port {self.port} on {self.host} is already in use (another serve?); choose another with --port"
                ) from None
            raise BertExportError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    async def _start(self) -> None:
        from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress off: the body is inflated here, under max_body (aiohttp would inflate it unbounded first)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        self._session = ClientSession(
            connector=TCPConnector(limit=256, limit_per_host=256),
            timeout=ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- requests --------------------------------------------------------------------------------

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        path = request.path
        if path == "/v2/health/live":
            return web.Response(status=200)
        if path == "/v2/health/ready" and not self.ready.is_set():
            return web.Response(status=503)
        if not self.ready.is_set():
            self.stats.add("unavailable")
            return _error(503, f"model {self.model} is not loaded yet (or tritonserver is restarting); retry shortly")
        try:
            body = await self._read(request)
            body, inflated = check_body(body, request.headers, self.max_body, self.max_depth)
        except Refused as exc:
            self.stats.add("refused")
            return _error(exc.status, str(exc))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if inflated:
            headers.pop("Content-Encoding", None)
            headers.pop("content-encoding", None)
        try:
            async with self._session.request(
                request.method,
                f"http://127.0.0.1:{self.upstream_port}{request.raw_path}",
                headers=headers,
                data=body if body else None,
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                self.stats.add("forwarded")
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except (OSError, asyncio.TimeoutError, _client_errors()) as exc:
            self.stats.add("unavailable")
            return _error(503, f"tritonserver is not answering ({type(exc).__name__}); it restarts by itself, retry")

    async def _read(self, request: Any) -> bytes:
        """The request body, refused (413) as soon as it passes ``max_body``, however it is framed."""
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            raise Refused(
                413, f"the request body is {declared} bytes; at most {self.max_body} (serve --max-request-mb)"
            )
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.max_body:
                raise Refused(413, f"the request body passes {self.max_body} bytes (serve --max-request-mb)")
            chunks.append(chunk)
        return b"".join(chunks)


def _client_errors() -> type[BaseException]:
    from aiohttp import ClientError

    return ClientError


def _error(status: int, message: str) -> Any:
    """Triton's error shape: ``{"error": "..."}``."""
    from aiohttp import web

    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")
