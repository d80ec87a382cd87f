"""Serving load test: ``bert-export serve`` (Triton via PyTriton, dynamic batching) vs ``run``'s single request.

    flock /tmp/bert-export-heavy.lock .venv/bin/python benchmarks/bench_serve.py [--requests 256] [--max-seconds 120]

The packaged MiniLM (all-MiniLM-L6-v2) as an ``embed`` and a ``qa`` bundle (max_seq 128), each:

1. ``run`` baseline, in its own process: ``predict()`` on one input per call in a loop (what a
   process calling our API per request gets), requests/s;
2. the ceiling, same process kind: serve's own batch function (``serving.textmodel.TextModel``) on
   32 inputs per call, without a server (the most dynamic batching can give on this machine);
3. ``bert-export serve`` in its own process on 127.0.0.1 (free ports), then 1, 8 and 32 concurrent
   gRPC clients (a load-generator process) sending ``--requests`` requests in all per level
   (``--requests / clients`` each): failed requests, p50/p99 latency, requests/s, and the batch
   sizes Triton formed (from its statistics API: executions per batch size, and the Prometheus
   ``nv_inference_count / nv_inference_exec_count``).

Bounded in count and time (each level stops at ``--max-seconds``). Writes benchmarks/serving.json
and benchmarks/serving.md. Ratios are within this one run; absolute numbers vary 2-3x between
machines and hours.

``--infinity`` runs the issue-25 comparison instead (writes benchmarks/serving_infinity.{json,md}):

    bash benchmarks/setup_infinity.sh   # once: Infinity in .ci/cache/infinity-venv (benchmarks only)
    .venv/bin/python benchmarks/bench_serve.py --infinity [--requests 256] [--max-seconds 120]

the packaged MiniLM as an embed bundle (max_seq 128) in fp32 and in int8 (``--precisions int8``),
each served by ``bert-export serve`` (gRPC, the load test above) and by Infinity (``infinity_emb
v2 --engine optimum --onnx-disable-optimize``: the optimum engine on the very same graph file,
un-reoptimized; Infinity speaks HTTP only, so its load generator posts to ``/embeddings`` with one
keep-alive connection per client). One server process at a time, on 127.0.0.1, free ports, each
stopped (process group) before the next starts; 8 and 32 concurrent single-sentence clients, after
a 16-request warm-up; the 1-minute load average is recorded before and after every level.

``--account`` runs the serve half of that, one round, and splits each request's time (writes
benchmarks/serving_account.{json,md}): Triton's statistics give the queue wait and each batch's execute
time; serve's batch function is then timed alone on the batch sizes Triton formed, and the rest of the
execute time is PyTriton's hop between tritonserver's stub and serve's process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CONCURRENCY = (1, 8, 32)
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Dynamic batching merges requests from many clients into one inference call.",
    "Short text.",
    "Encoders such as BERT turn each token of a sentence into a contextual vector; pooling them gives a sentence embedding "
    "that search and clustering systems compare with a cosine similarity.",
    "Where is the nearest train station?",
    "Serving at scale needs a server that batches, schedules and reports metrics.",
    "Ünïcödé: naïve café, 東京.",
    "The model was exported to ONNX, fused for ONNX Runtime, validated against PyTorch and deployed.",
]
QA = [
    ("Who wrote the novel?", "Pride and Prejudice is a novel written by Jane Austen and published in 1813."),
    (
        "What do encoders produce?",
        "Encoders such as BERT produce contextual embeddings for every token of the input text.",
    ),
    (
        "Where is the tower?",
        "The Eiffel Tower stands in Paris, on the Champ de Mars, beside the Seine river in France.",
    ),
    ("When did it open?", "The museum opened its doors to the public in 1793, during the French Revolution."),
]
CLI = [sys.executable, "-c", "from bert_export.cli.main import main; main()"]


def bundle(task: str, work: Path) -> Path:
    out = work / f"minilm-{task}-128"
    if not (out / "manifest.json").exists():
        subprocess.run(
            [*CLI, "bert", "--task", task, "--model", MINILM, "--max-seq", "128", "--out", str(out), "--force", "-q"],
            check=True,
        )
    return out


# -- in-process baselines (run in a child process: one runtime per process) ---------------------------

BASELINE = r"""
import json, sys, time
from bert_export.bundle.reader import load_bundle
from bert_export.runtimes.factory import make_runner
from bert_export.runtimes.predict import predict
path, task, n, batch, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[7]
texts = json.loads(sys.argv[5]); qa = json.loads(sys.argv[6])
b = load_bundle(path)
with make_runner(b, "ort") as runner:
    from bert_export.runtimes.factory import bundle_tokenizer
    from bert_export.serving.textmodel import TextModel
    model = TextModel(b, runner, bundle_tokenizer(b))  # what serve runs on each batch Triton forms
    def item(j):
        return {"QUESTION": qa[j % len(qa)][0], "CONTEXT": qa[j % len(qa)][1]} if task == "qa" else {"TEXT": texts[j % len(texts)]}
    def one(i):
        if mode == "model":
            assert not any(r.error for r in model.predict([item(i + k) for k in range(batch)]))
        elif task == "qa":
            predict(b, question=qa[i % len(qa)][0], context=qa[i % len(qa)][1], runner=runner)
        else:
            predict(b, texts=[texts[i % len(texts)]], runner=runner)
    for i in range(5):
        one(i)
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter(); one(i); lat.append(time.perf_counter() - s)
    total = time.perf_counter() - t0
print(json.dumps({"requests": n * batch, "seconds": total, "rps": n * batch / total, "p50_ms": sorted(lat)[len(lat) // 2] * 1e3}))
"""


def baseline(path: Path, task: str, n: int, batch: int, mode: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, str(path), task, str(n), str(batch), json.dumps(TEXTS), json.dumps(QA), mode],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- the server and its load ----------------------------------------------------------------------

# Both load generators end alike: start the clients together, time them, print one JSON line of the results.
_LOAD_RUN = r"""threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
[t.start() for t in threads]; start.wait()
t0 = time.perf_counter()
[t.join() for t in threads]
total = time.perf_counter() - t0
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else None
print(json.dumps({"clients": clients, "requests": clients * per_client, "ok": len(lat), "failed": len(failed),
                  "errors": failed[:3], "seconds": total, "rps": len(lat) / total, "p50_ms": q(0.5), "p99_ms": q(0.99),
                  "mean_ms": sum(lat) / len(lat) * 1e3 if lat else None}))
"""

LOAD = (
    r"""
import json, sys, threading, time
import numpy as np
import tritonclient.grpc as grpc
url, name, task, clients, per_client, max_s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
texts = json.loads(sys.argv[7]); qa = json.loads(sys.argv[8])
lat, failed, lock = [], [], threading.Lock()
deadline = time.monotonic() + max_s
def inputs(i):
    fields = {"QUESTION": qa[i % len(qa)][0], "CONTEXT": qa[i % len(qa)][1]} if task == "qa" else {"TEXT": texts[i % len(texts)]}
    out = []
    for k, v in fields.items():
        x = grpc.InferInput(k, [1, 1], "BYTES"); x.set_data_from_numpy(np.array([[v.encode()]], dtype=object)); out.append(x)
    return out
start = threading.Barrier(clients + 1)  # every client connected before the clock starts
def worker(w):
    c = grpc.InferenceServerClient(url)
    c.is_server_live()  # the channel connects lazily: connect outside the timed window
    start.wait()
    for j in range(per_client):
        if time.monotonic() > deadline:
            with lock: failed.append("time limit")
            continue
        s = time.perf_counter()
        try:
            r = c.infer(name, inputs(w * per_client + j))
            err = r.as_numpy("ERROR").reshape(-1)[0]
            ok = not err and json.loads(r.as_numpy("JSON").reshape(-1)[0])
        except Exception as exc:
            ok, err = False, str(exc)
        with lock:
            (lat.append(time.perf_counter() - s) if ok else failed.append(str(err)[:200]))
    c.close()
"""
    + _LOAD_RUN
)


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def counters(http: int, metrics: int, name: str) -> dict[str, Any]:
    """Triton's own counts: inferences, executions and executions per batch size."""
    stats = json.loads(_get(f"http://127.0.0.1:{http}/v2/models/{name}/stats"))["model_stats"][0]
    per_size = {int(s["batch_size"]): int(s["compute_infer"]["count"]) for s in stats.get("batch_stats", [])}
    inference = stats.get("inference_stats", {})
    times = {  # Triton's cumulative nanoseconds: per request (success = queue + execute), per batch (execute)
        "success_ns": int(inference.get("success", {}).get("ns", 0)),
        "success_count": int(inference.get("success", {}).get("count", 0)),
        "queue_ns": int(inference.get("queue", {}).get("ns", 0)),
        "execute_ns": sum(
            int(s[part]["ns"])
            for s in stats.get("batch_stats", [])
            for part in ("compute_input", "compute_infer", "compute_output")
        ),
    }
    prom = {}
    for line in _get(f"http://127.0.0.1:{metrics}/metrics").decode().splitlines():
        if line.startswith(("nv_inference_count{", "nv_inference_exec_count{")) and f'model="{name}"' in line:
            prom[line.split("{")[0]] = float(line.rsplit(" ", 1)[1])
    return {"per_size": per_size, **times, **prom}


def serve_levels(
    path: Path,
    task: str,
    requests: int,
    max_seconds: float,
    max_batch: int,
    delay_ms: float,
    concurrency: tuple[int, ...] = CONCURRENCY,
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    http, grpc_port, metrics = free_ports(3)
    name = f"bench_{task}"
    log = open(path.parent / f"serve-{task}.log", "wb")  # beside the bundles (--work), not in the repository
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            str(path),
            "--name",
            name,
            "--port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics),
            "--max-batch",
            str(max_batch),
            "--max-queue-delay-ms",
            str(delay_ms),
            "--open-statistics",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start; see {log.name}")
            try:
                _get(f"http://127.0.0.1:{http}/v2/models/{name}/ready")
                break
            except OSError:
                time.sleep(0.5)
        levels = []
        for clients in (1, *concurrency):  # the first pass warms up (not reported)
            before = counters(http, metrics, name)
            load_before = os.getloadavg()[0]
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    LOAD,
                    f"127.0.0.1:{grpc_port}",
                    name,
                    task,
                    str(clients),
                    str(max(1, requests // clients) if levels or clients != 1 else 16),
                    str(max_seconds),
                    json.dumps(TEXTS),
                    json.dumps(QA),
                ],
                capture_output=True,
                text=True,
                timeout=max_seconds + 120,
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            after = counters(http, metrics, name)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            sizes = {
                k: v - before["per_size"].get(k, 0)
                for k, v in after["per_size"].items()
                if v - before["per_size"].get(k, 0)
            }
            inf = after.get("nv_inference_count", 0) - before.get("nv_inference_count", 0)
            exe = after.get("nv_inference_exec_count", 0) - before.get("nv_inference_exec_count", 0)
            row.update({"batch_sizes": dict(sorted(sizes.items())), "mean_batch": inf / exe if exe else None})
            row.update(_triton_times(before, after, exe))
            row["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            if clients == 1 and not levels and row["requests"] == 16:
                levels.append({"warmup": True})
                continue
            levels.append(row)
            print(
                f"  {task} serve x{clients}: {row['rps']:.1f} req/s, p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                f"failed {row['failed']}, mean batch {row['mean_batch']:.2f}",
                flush=True,
            )
        return [r for r in levels if not r.get("warmup")]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _triton_times(before: dict[str, Any], after: dict[str, Any], executions: float) -> dict[str, Any]:
    """Mean milliseconds inside Triton over one level: a request's time there (queue + execute), its wait in the
    dynamic batcher's queue, and one batch's execute (the Python-backend stub, PyTriton's hop into serve's process,
    our tokenizer + runtime + replies, and back)."""
    d = {k: after[k] - before[k] for k in ("success_ns", "success_count", "queue_ns", "execute_ns")}
    if not d["success_count"] or not executions:
        return {}
    return {
        "triton_request_ms": d["success_ns"] / d["success_count"] / 1e6,
        "queue_ms": d["queue_ns"] / d["success_count"] / 1e6,
        "execute_ms_per_batch": d["execute_ns"] / executions / 1e6,
    }


# -- issue 25: bert-export serve vs Infinity on the same graphs ------------------------------------

INFINITY_LEVELS = (8, 32)
INFINITY_PYTHON = ROOT / ".ci" / "cache" / "infinity-venv" / "bin" / "python"

LOAD_HTTP = (
    r"""
import http.client, json, sys, threading, time
host, port, name, clients, per_client, max_s = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
texts = json.loads(sys.argv[7])
lat, failed, lock = [], [], threading.Lock()
deadline = time.monotonic() + max_s
start = threading.Barrier(clients + 1)  # every client connected before the clock starts
def worker(w):
    c = http.client.HTTPConnection(host, port, timeout=max_s + 30)
    c.connect()
    start.wait()
    for j in range(per_client):
        if time.monotonic() > deadline:
            with lock: failed.append("time limit")
            continue
        body = json.dumps({"model": name, "input": [texts[(w * per_client + j) % len(texts)]]})
        s = time.perf_counter()
        try:
            c.request("POST", "/embeddings", body, {"Content-Type": "application/json"})
            r = c.getresponse(); data = r.read()
            ok = r.status == 200 and len(json.loads(data)["data"][0]["embedding"]) > 0
            err = "" if ok else f"HTTP {r.status}: {data[:150]!r}"
        except Exception as exc:
            ok, err = False, str(exc)
            c.close(); c = http.client.HTTPConnection(host, port, timeout=max_s + 30)
        with lock:
            (lat.append(time.perf_counter() - s) if ok else failed.append(err[:200]))
    c.close()
"""
    + _LOAD_RUN
)


def embed_bundle(precision: str, work: Path) -> Path:
    """The packaged MiniLM as an embed bundle (max_seq 128) whose default graph is ``precision``."""
    out = work / f"minilm-embed-128-{precision}"
    if not (out / "manifest.json").exists():
        subprocess.run(
            [*CLI, "bert", "--task", "embed", "--model", MINILM, "--max-seq", "128", "--precisions", precision]
            + ["--out", str(out), "--force", "-q"],
            check=True,
        )
    return out


def infinity_dir(bundle_dir: Path, work: Path) -> Path:
    """A model directory Infinity's optimum engine loads: the bundle's files (config, tokenizer,
    sentence-transformers pooling) and, as its only .onnx, the bundle's default graph (symlinks).

    The graph sits at the top as model.onnx and Infinity runs in this directory with --model-id .:
    infinity-emb 0.0.78 hands optimum the path it globbed as file_name, which optimum compares with
    bare file names, so only a top-level file found from a relative model id matches."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    graph = manifest["graph"]["file"]
    out = work / f"infinity-{bundle_dir.name}"
    if out.exists():
        return out
    tmp = work / f".{out.name}.tmp"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    for entry in bundle_dir.iterdir():
        if entry.suffix == ".onnx" or entry.name in ("onnx", "manifest.json") or entry.name.endswith(".onnx.data"):
            continue
        (tmp / entry.name).symlink_to(entry.resolve())
    (tmp / "model.onnx").symlink_to((bundle_dir / graph).resolve())
    tmp.rename(out)
    return out


def _wait(url: str, proc: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server for {url} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer within {seconds:.0f} s; see {log}")
        try:
            _get(url)
            return
        except OSError:
            time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (started with start_new_session), SIGKILL after 60 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def infinity_levels(
    model_dir: Path, python: Path, requests: int, max_seconds: float, max_batch: int, levels: tuple[int, ...]
) -> list[dict[str, Any]]:
    """Infinity (optimum engine, CPU) on ``model_dir`` in its own process; the HTTP load at each level."""
    (port,) = free_ports(1)
    log = model_dir.parent / f"{model_dir.name}.log"
    env = {
        **os.environ,
        "HF_HOME": str(model_dir.parent.resolve() / "hf-home"),  # nothing written under the user's cache
        "HF_HUB_OFFLINE": "1",
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    argv = [str(python), "-m", "infinity_emb.cli", "v2", "--model-id", ".", "--served-model-name", "minilm"]
    argv += ["--engine", "optimum", "--device", "cpu", "--onnx-disable-optimize", "--batch-size", str(max_batch)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=model_dir, start_new_session=True
        )
    rows = []
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, 300, log)
        for clients in (1, *levels):  # the first pass (16 requests) warms up, not reported
            per_client = 16 if clients == 1 and not rows else max(1, requests // clients)
            load_before = os.getloadavg()[0]
            out = subprocess.run(
                [sys.executable, "-c", LOAD_HTTP, "127.0.0.1", str(port), "minilm", str(clients), str(per_client)]
                + [str(max_seconds), json.dumps(TEXTS)],
                capture_output=True,
                text=True,
                timeout=max_seconds + 120,
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["load_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            if clients == 1 and not rows:
                rows.append({"warmup": True})
                continue
            rows.append(row)
            print(f"  infinity x{clients}: {_summary(row)}", flush=True)
    finally:
        _stop(proc)
    return [r for r in rows if not r.get("warmup")]


def _summary(row: dict[str, Any]) -> str:
    p50, p99 = row.get("p50_ms"), row.get("p99_ms")
    lat = f"p50 {p50:.0f} ms, p99 {p99:.0f} ms" if p50 is not None and p99 is not None else "no successful request"
    return f"{row['rps']:.1f} req/s, {lat}, failed {row['failed']}, load {row['load_1min']}"


def compare_infinity(args: argparse.Namespace) -> None:
    """bert-export serve vs Infinity, fp32 and int8, at INFINITY_LEVELS clients: serving_infinity.{json,md}."""
    python = Path(args.infinity_python)
    if not python.exists():
        raise SystemExit(f"no {python}: run `bash benchmarks/setup_infinity.sh` first (benchmarks only)")
    results: dict[str, Any] = {"machine": machine(), "requests": args.requests, "max_batch": args.max_batch}
    results.update({"delay_ms": args.delay_ms, "levels": list(INFINITY_LEVELS), "rows": []})
    results["rounds"] = args.rounds
    for rnd in range(1, args.rounds + 1):  # the systems alternate within each round: drift hits both alike
        for precision in args.precisions.split(","):
            path = embed_bundle(precision, args.work)
            systems = (
                (
                    "bert-export serve (gRPC)",
                    lambda: serve_levels(
                        path, "embed", args.requests, args.max_seconds, args.max_batch, args.delay_ms, INFINITY_LEVELS
                    ),
                ),
                (
                    "Infinity optimum (HTTP)",
                    lambda: infinity_levels(
                        infinity_dir(path, args.work),
                        python,
                        args.requests,
                        args.max_seconds,
                        args.max_batch,
                        INFINITY_LEVELS,
                    ),
                ),
            )
            for system, run_levels in systems:
                print(f"round {rnd}/{args.rounds}, {system}, {precision}:", flush=True)
                for row in run_levels():
                    results["rows"].append({"system": system, "precision": precision, "round": rnd, **row})
    results["machine"]["date_end"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (HERE / "serving_infinity.json").write_text(json.dumps(results, indent=2) + "\n")
    write_infinity(results)
    print(f"wrote {HERE / 'serving_infinity.md'}")


# -- issue 25: where a request's time goes inside serve ----------------------------------------------

PER_BATCH = r"""
import json, sys, threading, time
from bert_export.bundle.reader import load_bundle
from bert_export.runtimes.factory import bundle_tokenizer, make_runner
from bert_export.serving.server import infer_callable
from bert_export.serving.textmodel import TextModel
import numpy as np
path, sizes, texts, instances = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
b = load_bundle(path)
def batch(j, k):  # k single-text requests, as Triton hands them over
    return [{"TEXT": np.array([[texts[(j + i) % len(texts)].encode()]], dtype=object)} for i in range(k)]
out = {}
with make_runner(b, "ort") as runner:
    # serve's own batch functions, one per instance, sharing the runner as serve's instances do; no server
    infers = [infer_callable(m) for m in TextModel(b, runner, bundle_tokenizer(b)).replicas(instances)]
    for k in sizes:
        lat, lock, calls = [], threading.Lock(), max(5, 60 // k)
        gate = threading.Barrier(instances)
        def loop(infer, record):
            for j in range(3):
                infer(batch(j, k))
            gate.wait()
            for j in range(calls):
                requests = batch(j, k)
                t = time.perf_counter(); infer(requests); d = time.perf_counter() - t
                if record:
                    with lock:
                        lat.append(d)
        threads = [threading.Thread(target=loop, args=(f, True)) for f in infers]
        [t.start() for t in threads]; [t.join() for t in threads]
        out[k] = sorted(lat)[len(lat) // 2] * 1e3
print(json.dumps(out))
"""


def ours_per_batch(path: Path, sizes: list[int], instances: int) -> dict[int, float]:
    """Median ms of serve's batch function (its own process, no server) per batch size, with ``instances`` of
    them running at once on one runner as serve's model instances do."""
    out = subprocess.run(
        [sys.executable, "-c", PER_BATCH, str(path), json.dumps(sorted(sizes)), json.dumps(TEXTS), str(instances)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    ).stdout
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def account(args: argparse.Namespace) -> None:
    """serve at INFINITY_LEVELS clients, with Triton's own split of each request's time and serve's batch function
    timed alone on the batch sizes Triton formed: serving_account.{json,md}."""
    results: dict[str, Any] = {"machine": machine(), "requests": args.requests, "max_batch": args.max_batch}
    results.update({"delay_ms": args.delay_ms, "rows": []})
    for precision in args.precisions.split(","):
        path = embed_bundle(precision, args.work)
        print(f"serve, {precision}:", flush=True)
        for row in serve_levels(
            path, "embed", args.requests, args.max_seconds, args.max_batch, args.delay_ms, INFINITY_LEVELS
        ):
            results["rows"].append({"precision": precision, **row})
        sizes = sorted({int(k) for r in results["rows"] if r["precision"] == precision for k in r["batch_sizes"]})
        for instances, field in ((1, "ours_alone_ms_per_batch"), (2, "ours_ms_per_batch")):
            ours = ours_per_batch(path, sizes, instances)  # after the server has stopped: nothing else on the cores
            for r in results["rows"]:
                if r["precision"] == precision:
                    counts = {int(k): v for k, v in r["batch_sizes"].items()}
                    r[field] = sum(ours[k] * c for k, c in counts.items()) / sum(counts.values())
    results["machine"]["date_end"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (HERE / "serving_account.json").write_text(json.dumps(results, indent=2) + "\n")
    write_account(results)
    print(f"wrote {HERE / 'serving_account.md'}")


def write_account(results: dict[str, Any]) -> None:
    m = results["machine"]
    lines = [
        "# Where a request's time goes in `bert-export serve` (issue 25)",
        "",
        f"Generated by `benchmarks/bench_serve.py --account` on {m['cpu']} ({m['cores']} cores), {m['date']} to "
        f"{m.get('date_end', '?')}; the serve half of `--infinity` (same bundles, texts, gRPC load generator, "
        f"{results['requests']} requests per level, max batch {results['max_batch']}, queue delay "
        f"{results['delay_ms']} ms), one round.",
        "",
        "Columns, all means in ms: *client* = the load generator's p50 latency; *in Triton* = a request's time "
        "inside tritonserver (Triton's statistics: queue + execute); *queue* = its wait in the dynamic batcher; "
        "*execute / batch* = one batch in the Python backend: the stub, PyTriton's hop (ZeroMQ + shared memory) "
        "into serve's process, serve's batch function, and back; *ours / batch* = serve's batch function "
        "(tokenize, ONNX Runtime, replies) timed in its own process without a server on the same batch sizes, "
        "weighted as Triton formed them, *alone* and with *two at once* on one runner (serve's two instances); "
        "*hop / batch* = execute - ours two at once; *outside Triton* = client mean - in Triton (gRPC both ways, "
        "the load generator's Python, on the same 2 cores).",
        "",
        "| precision | clients | req/s | client mean (p99) | in Triton | queue | mean batch | execute / batch | "
        "ours / batch alone | two at once | hop / batch | outside Triton | load 1-min |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def f(v: float | None) -> str:
        return f"{v:.1f}" if v is not None else "-"

    for r in results["rows"]:
        ex, ours = r.get("execute_ms_per_batch"), r.get("ours_ms_per_batch")
        hop = ex - ours if ex is not None and ours is not None else None
        inside, mean = r.get("triton_request_ms"), r.get("mean_ms")
        outside = mean - inside if inside is not None and mean is not None else None
        lines.append(
            f"| {r['precision']} | {r['clients']} | {r['rps']:.1f} | {f(mean)} ({f(r['p99_ms'])}) | {f(inside)} | "
            f"{f(r.get('queue_ms'))} | {f(r.get('mean_batch'))} | {f(ex)} | {f(r.get('ours_alone_ms_per_batch'))} | "
            f"{f(ours)} | {f(hop)} | {f(outside)} | {r['load_1min']} |"
        )
    out = HERE / "serving_account.md"
    _write_keeping(out, lines + [""], READING)


READING = "## Reading"


def write_infinity(results: dict[str, Any]) -> None:
    m = results["machine"]
    lines = [
        "# Serving: `bert-export serve` vs Infinity on the same graphs (issue 25)",
        "",
        f"Generated by `benchmarks/bench_serve.py --infinity` on {m['cpu']} ({m['cores']} cores), {m['date']} to "
        f"{m.get('date_end', '?')}. Packaged MiniLM embed bundle, max_seq 128; single-sentence requests "
        f"({len(TEXTS)} English texts in turn), {results['requests']} requests per level split over the clients; "
        f"max batch {results['max_batch']} for both servers, serve's queue delay {results['delay_ms']} ms. "
        "serve: gRPC to Triton; Infinity: HTTP `/embeddings` (its only API), optimum engine on the bundle's own "
        "graph file (`--onnx-disable-optimize`). One server at a time, each in its own process group.",
        "",
        "**Load**: the highest 1-minute load average seen around each cell is in the last column. The servers and "
        "the load generator share the machine, so a run alone reads about 2 on 2 cores; well above that, other "
        "work was running and the cells are not benchmarks.",
        "",
        "| system | precision | clients | rounds | ok / requests | req/s median (min-max) | p50 ms | p99 ms | "
        "load 1-min (max) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    cells = _cells(results["rows"])
    for (system, precision, clients), r in cells.items():
        p50 = f"{r['p50_ms']:.0f}" if r.get("p50_ms") is not None else "-"
        p99 = f"{r['p99_ms']:.0f}" if r.get("p99_ms") is not None else "-"
        lines.append(
            f"| {system} | {precision} | {clients} | {r['rounds']} | {r['ok']} / {r['requests']} | "
            f"{r['rps']:.1f} ({r['rps_min']:.0f}-{r['rps_max']:.0f}) | {p50} | {p99} | {r['load_max']} |"
        )
    by = {(system.split(" (")[0], precision, clients): r for (system, precision, clients), r in cells.items()}
    ratios = []
    for (system, precision, clients), r in sorted(by.items()):
        other = by.get(("Infinity optimum", precision, clients))
        if system == "bert-export serve" and other and other["rps"]:
            p99 = (
                f", p99 {r['p99_ms']:.0f} vs {other['p99_ms']:.0f} ms"
                if r.get("p99_ms") and other.get("p99_ms")
                else ""
            )
            ratios.append(
                f"- {precision}, {clients} clients: serve / Infinity = {r['rps'] / other['rps']:.2f}x req/s "
                f"(medians){p99}"
            )
    lines += ["", "Ratios within this run (same machine, back to back):", "", *ratios, ""]
    out = HERE / "serving_infinity.md"
    _write_keeping(out, lines, ANALYSIS)


def _write_keeping(out: Path, lines: list[str], heading: str) -> None:
    """Write the generated part; the hand-written section of the old file (``heading`` onward) survives a re-run."""
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    kept = old[old.index(heading) :] if heading in old else ""
    out.write_text("\n".join(lines) + ("\n" + kept if kept else ""))


ANALYSIS = "## Where serve's time goes"


def _cells(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Per (system, precision, clients): the median req/s, p50 and p99 over the rounds, and the req/s range."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["system"], r["precision"], r["clients"]), []).append(r)
    cells = {}
    for key, group in groups.items():
        rps = [g["rps"] for g in group]

        def med(field: str, group: list[dict[str, Any]] = group) -> float | None:
            values = [g[field] for g in group if g.get(field) is not None]
            return statistics.median(values) if values else None

        cells[key] = {
            "rounds": len(group),
            "ok": sum(g["ok"] for g in group),
            "requests": sum(g["requests"] for g in group),
            "rps": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms": med("p50_ms"),
            "p99_ms": med("p99_ms"),
            "load_max": max(max(g["load_1min"]) for g in group),
        }
    return cells


def machine() -> dict[str, Any]:
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    return info


def write(results: dict[str, Any]) -> None:
    (HERE / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    lines = [
        "# Serving load test (`bert-export serve`, Triton via PyTriton, CPU)",
        "",
        f"Generated by `benchmarks/bench_serve.py` on {m['cpu']} ({m['cores']} cores), {m['date']}; "
        f"{results['requests']} requests per concurrency level over gRPC on 127.0.0.1, max batch {results['max_batch']}, "
        f"queue delay {results['delay_ms']} ms. The machine was shared with other work: compare the ratios, "
        "which come from this one run, not the absolute numbers.",
        "",
        "`run` = `predict()` on one input per call in a loop in its own process (the API's single-request path: it "
        "rebuilds the bundle's tokenizer from its listed files on every call); "
        "kept = serve's batch function (`TextModel`) on one input per call with tokenizer and runner kept (the fair "
        "single-request baseline: the server's gain over it is dynamic batching alone); "
        "ceiling = serve's batch function (`TextModel`) on 32 inputs per call without a server (what batching can reach on this CPU). "
        "Batch sizes are Triton's own count of executions per batch size (statistics API) for that level.",
        "",
    ]
    for task, r in results["tasks"].items():
        base, kept = r["run_single"]["rps"], r["single_kept"]["rps"]
        lines += [
            f"## MiniLM {task} (max_seq 128)",
            "",
            f"`run` single request: {base:.1f} req/s (p50 {r['run_single']['p50_ms']:.1f} ms); "
            f"kept single: {kept:.1f} req/s (p50 {r['single_kept']['p50_ms']:.1f} ms); "
            f"ceiling (32 per call): {r['ceiling_32']['rps']:.1f} req/s ({r['ceiling_32']['rps'] / kept:.2f}x kept)",
            "",
            "| clients | requests | failed | req/s | vs `run` | vs kept | p50 ms | p99 ms | mean batch | batches formed (size: count) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in r["serve"]:
            sizes = ", ".join(f"{k}: {v}" for k, v in row["batch_sizes"].items())
            lines.append(
                f"| {row['clients']} | {row['requests']} | {row['failed']} | {row['rps']:.1f} | {row['rps'] / base:.2f}x | "
                f"{row['rps'] / kept:.2f}x | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['mean_batch']:.2f} | {sizes} |"
            )
        lines.append("")
    (HERE / "serving.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--requests", type=int, default=256, help="Requests per concurrency level (split over the clients)."
    )
    ap.add_argument("--max-seconds", type=float, default=120.0, help="Time limit per level.")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--delay-ms", type=float, default=2.0)
    ap.add_argument("--tasks", default="embed,qa")
    ap.add_argument("--work", type=Path, default=ROOT / "exports" / "bench-serve")
    ap.add_argument("--infinity", action="store_true", help="serve vs Infinity at 8 and 32 clients (issue 25).")
    ap.add_argument("--infinity-python", default=str(INFINITY_PYTHON), help="Infinity's venv python.")
    ap.add_argument("--precisions", default="fp32,int8", help="--infinity: the bundles' precisions.")
    ap.add_argument("--rounds", type=int, default=3, help="--infinity: rounds (systems alternate); medians reported.")
    ap.add_argument("--account", action="store_true", help="where serve's time goes, per level (issue 25).")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.account:
        return account(args)
    if args.infinity:
        return compare_infinity(args)
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "requests": args.requests,
        "max_batch": args.max_batch,
        "delay_ms": args.delay_ms,
        "tasks": {},
    }
    try:
        results["machine"]["cpu"] = next(
            l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    for task in args.tasks.split(","):
        path = bundle(task, args.work)
        single = baseline(path, task, min(args.requests, 128), 1, "predict")
        print(f"  {task} run single: {single['rps']:.1f} req/s", flush=True)
        hot = baseline(path, task, min(args.requests, 128), 1, "model")
        print(f"  {task} one input per call, tokenizer and runner kept: {hot['rps']:.1f} req/s", flush=True)
        ceiling = baseline(path, task, 8, 32, "model")
        print(f"  {task} ceiling (32 per call): {ceiling['rps']:.1f} req/s", flush=True)
        results["tasks"][task] = {
            "run_single": single,
            "single_kept": hot,
            "ceiling_32": ceiling,
            "serve": serve_levels(path, task, args.requests, args.max_seconds, args.max_batch, args.delay_ms),
        }
    write(results)
    print(f"wrote {HERE / 'serving.md'}")


if __name__ == "__main__":
    main()
