"""Serving on Triton: model repositories (config.pbtxt parsed by Triton's own ModelConfig), the
Python-backend models loaded in PyTriton's tritonserver, and ``bert-export serve`` as a real server.

Servers run on 127.0.0.1 with free ports, in a subprocess (the real CLI), bounded in time and always
stopped. The serve extra is needed (locally a skip, in CI a failure: tests.conftest.needs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.serving.deps import missing

from .conftest import MINILM_ID, needs

HAVE_CLIENT = not missing(server=False)
HAVE_SERVER = not missing(server=True)
START_TIMEOUT = 180.0
CLI = [sys.executable, "-c", "from bert_export.cli.main import main; main()"]

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Triton batches requests from many clients.",
    "A much longer sentence about exporting encoder models to ONNX, validating them against PyTorch on real text, "
    "and then serving them behind an inference server with dynamic batching.",
    "Short.",
    "Ünïcödé text: naïve café, 東京, emoji 🙂.",
]
QA = [
    ("Who wrote the novel?", "Pride and Prejudice is a novel written by Jane Austen and published in 1813."),
    ("When was it published?", "Pride and Prejudice is a novel written by Jane Austen and published in 1813."),
    (
        "What do encoders produce?",
        "Encoders such as BERT produce contextual embeddings for every token of the input text.",
    ),
    ("Where is the tower?", "The Eiffel Tower stands in Paris, on the Champ de Mars, beside the Seine."),
]


def need_client() -> None:
    needs(HAVE_CLIENT, "tritonclient[grpc,http] not installed (pip install bert-export[serve])")


def need_server() -> None:
    needs(HAVE_SERVER, "nvidia-pytriton not installed (pip install bert-export[serve])")
    from bert_export.serving import stubenv

    try:
        stubenv.stub_python_env()
    except Exception as exc:  # the numpy<2 companion env is missing: CI creates it in .ci/install.d/40-serve.sh
        needs(False, str(exc))


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    proc: subprocess.Popen
    name: str
    http: int
    grpc: int
    metrics: int
    log: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def minilm_embed(make_bundle: Any) -> Path:
    return make_bundle("bert", "embed", model=MINILM_ID, max_seq=128)


@pytest.fixture(scope="module")
def minilm_qa(make_bundle: Any) -> Path:
    return make_bundle("bert", "qa", model=MINILM_ID, max_seq=128)


def start_server(bundle: Path, name: str, log: Path, *extra: str) -> Server:
    http, grpc, metrics = free_ports(3)
    cmd = [
        *CLI,
        "serve",
        str(bundle),
        "--name",
        name,
        "--port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--max-batch",
        "16",
        "--max-queue-delay-ms",
        "5",
        *extra,
    ]
    fh = log.open("wb")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, name, http, grpc, metrics, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if _get(f"http://{server.http_url}/v2/models/{name}/ready")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise AssertionError(f"serve was not ready in {START_TIMEOUT:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_server(server: Server) -> int:
    """SIGTERM (what a supervisor sends), then a bounded wait; kill the whole group if it hangs."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(timeout=10)
            raise AssertionError("serve did not stop within 60 s of SIGTERM") from None
    return server.proc.returncode


@pytest.fixture(scope="module")
def embed_server(minilm_embed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    need_client()
    need_server()
    server = start_server(minilm_embed, "minilm_embed", tmp_path_factory.mktemp("serve") / "embed.log")
    try:
        yield server
    finally:
        code = stop_server(server)
    assert code == 0, server.log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def qa_server(minilm_qa: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    need_client()
    need_server()
    server = start_server(minilm_qa, "minilm_qa", tmp_path_factory.mktemp("serve") / "qa.log")
    try:
        yield server
    finally:
        code = stop_server(server)
    assert code == 0, server.log.read_text(errors="replace")[-2000:]


# -- clients ----------------------------------------------------------------------------------------


def infer(server: Server, protocol: str, fields: dict[str, list[bytes]]) -> dict[str, list[str]]:
    """One request (rows of BYTES inputs) over HTTP or gRPC; the JSON/NOTE/ERROR outputs as str."""
    if protocol == "http":
        import tritonclient.http as client
    else:
        import tritonclient.grpc as client
    conn = client.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    try:
        inputs = []
        for name, values in fields.items():
            inp = client.InferInput(name, [len(values), 1], "BYTES")
            inp.set_data_from_numpy(np.array([[v] for v in values], dtype=object))
            inputs.append(inp)
        result = conn.infer(
            server.name, inputs, outputs=[client.InferRequestedOutput(n) for n in ("JSON", "NOTE", "ERROR")]
        )
        return {n: [v.decode("utf-8") for v in result.as_numpy(n).reshape(-1)] for n in ("JSON", "NOTE", "ERROR")}
    finally:
        conn.close()


def close(a: Any, b: Any, tol: float = 2e-5) -> bool:
    """JSON equality with float tolerance (a padded batch may move the 6th decimal)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= tol
    return a == b


def run_json(bundle: Path, *args: str) -> dict[str, Any]:
    """What ``bert-export run --json`` prints (the real CLI, its own process)."""
    out = subprocess.run(
        [*CLI, "run", str(bundle), "--json", *args], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- serve -----------------------------------------------------------------------------------------


def test_serve_embed_concurrent_http_grpc_equals_run_json(embed_server: Server, minilm_embed: Path) -> None:
    expected = run_json(minilm_embed, *(a for t in TEXTS for a in ("--text", t)))["embeddings"]
    jobs = [(i, p) for i in range(len(TEXTS)) for p in ("http", "grpc")] * 3
    with ThreadPoolExecutor(12) as pool:
        answers = list(
            pool.map(lambda job: (job, infer(embed_server, job[1], {"TEXT": [TEXTS[job[0]].encode()]})), jobs)
        )
    for (i, protocol), out in answers:
        assert out["ERROR"] == [""] and out["NOTE"] == [""], (protocol, out)
        got = json.loads(out["JSON"][0])
        assert close(got, {"embeddings": [expected[i]]}), (protocol, TEXTS[i])
    # several rows in one request: one answer per row, in order
    out = infer(embed_server, "grpc", {"TEXT": [t.encode() for t in TEXTS[:3]]})
    assert [close(json.loads(j)["embeddings"][0], expected[i]) for i, j in enumerate(out["JSON"])] == [True] * 3
    # Triton formed batches: fewer executions than inferences. Its counters can trail the last reply by a moment
    # (seen in CI: 30 of 33 read right after the 3-row request), so read until they arrive, for 10 s at most.
    key = f'{{model="{embed_server.name}",version="1"}}'
    deadline = time.monotonic() + 10
    while True:
        status, body = _get(f"http://127.0.0.1:{embed_server.metrics}/metrics")
        metrics = dict(
            line.rsplit(" ", 1)
            for line in body.decode().splitlines()
            if line.startswith("nv_inference_") and embed_server.name in line
        )
        if float(metrics.get("nv_inference_count" + key, 0)) >= len(jobs) + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and float(metrics["nv_inference_count" + key]) >= len(jobs) + 3
    assert float(metrics["nv_inference_exec_count" + key]) <= float(metrics["nv_inference_count" + key])


def test_serve_qa_concurrent_http_grpc_equals_run_json(qa_server: Server, minilm_qa: Path) -> None:
    expected = [run_json(minilm_qa, "--question", q, "--context", c) for q, c in QA]
    jobs = [(i, p) for i in range(len(QA)) for p in ("http", "grpc")] * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda job: (
                    job,
                    infer(
                        qa_server, job[1], {"QUESTION": [QA[job[0]][0].encode()], "CONTEXT": [QA[job[0]][1].encode()]}
                    ),
                ),
                jobs,
            )
        )
    for (i, protocol), out in answers:
        assert out["ERROR"] == [""], out
        got = json.loads(out["JSON"][0])
        assert close(got, expected[i]), (protocol, got, expected[i])
        assert QA[i][1][got["start"] : got["end"]] == got["answer"]


def test_serve_long_context_reads_windows_like_run(qa_server: Server, minilm_qa: Path) -> None:
    """A context past the bundle's maximum is read in overlapping windows, as `run` does, with a note."""
    question, context = QA[0][0], QA[0][1] + " Filler sentence about nothing in particular." * 60
    out = infer(qa_server, "http", {"QUESTION": [question.encode()], "CONTEXT": [context.encode()]})
    assert out["ERROR"] == [""] and "overlapping windows" in out["NOTE"][0] and "128" in out["NOTE"][0]
    assert close(json.loads(out["JSON"][0]), run_json(minilm_qa, "--question", question, "--context", context))


def test_serve_faults_get_errors_and_the_server_keeps_serving(embed_server: Server) -> None:
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    good = {"TEXT": [TEXTS[0].encode()]}
    conn = http.InferenceServerClient(embed_server.http_url)
    # missing input: Triton's own 400
    with pytest.raises(InferenceServerException, match="(?i)input|expected"):
        conn.infer(embed_server.name, [])
    # wrong dtype: INT32 where BYTES is declared
    bad = http.InferInput("TEXT", [1, 1], "INT32")
    bad.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="(?i)data type|datatype|dtype|TYPE_STRING|BYTES"):
        conn.infer(embed_server.name, [bad])
    conn.close()
    # raw HTTP: malformed JSON body
    req = urllib.request.Request(
        f"http://{embed_server.http_url}/v2/models/{embed_server.name}/infer", data=b"{not json", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code in (400, 500)  # Triton 2.51 answers a malformed body with 500 (and keeps serving)
    # a 100,000-character text and invalid UTF-8: an error for that item only, its neighbour answered
    out = infer(embed_server, "http", {"TEXT": [("word " * 20_000).encode(), TEXTS[1].encode(), b"caf\xc3 \xff\xfe"]})
    assert "100000 characters" in out["ERROR"][0] and out["JSON"][0] == ""
    assert out["ERROR"][1] == "" and len(json.loads(out["JSON"][1])["embeddings"][0]) == 384
    assert "UTF-8" in out["ERROR"][2] and out["JSON"][2] == ""
    # the same faults over gRPC, concurrently with good clients: every good request is answered
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(infer, embed_server, "grpc", {"TEXT": [b"\xff" * 10]}) for _ in range(4)]
        futures += [pool.submit(infer, embed_server, "grpc", good) for _ in range(8)]
        results = [f.result() for f in futures]
    assert all("UTF-8" in r["ERROR"][0] for r in results[:4])
    assert all(r["ERROR"] == [""] and r["JSON"][0] for r in results[4:])
    assert embed_server.proc.poll() is None


CLIENT = r"""
import sys, threading, numpy as np, tritonclient.http as http
url, name = sys.argv[1], sys.argv[2]
def loop():
    c = http.InferenceServerClient(url, concurrency=4)
    inp = http.InferInput("TEXT", [16, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[("some text to embed " * 20).encode()]] * 16, dtype=object))
    while True:
        c.infer(name, [inp])
for _ in range(4):
    threading.Thread(target=loop, daemon=True).start()
print("sending", flush=True)
threading.Event().wait()
"""


def test_serve_survives_a_client_killed_mid_request(embed_server: Server, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen(
        [sys.executable, str(script), embed_server.http_url, embed_server.name], stdout=subprocess.PIPE
    )
    try:
        assert client.stdout.readline().strip() == b"sending"
        time.sleep(2.0)  # requests in flight
    finally:
        client.kill()
        client.wait(timeout=10)
    assert embed_server.proc.poll() is None
    out = infer(embed_server, "grpc", {"TEXT": [TEXTS[0].encode()]})
    assert out["ERROR"] == [""] and json.loads(out["JSON"][0])["embeddings"]
    assert _get(f"http://{embed_server.http_url}/v2/health/live")[0] == 200


def test_length_buckets_cut_a_mixed_batch_into_runs_of_similar_length() -> None:
    from bert_export.serving.textmodel import length_buckets

    lengths = [12, 16, 5, 43, 9, 18, 10, 27] * 4  # what 32 clients sending the bench's texts put in one batch
    runs = length_buckets(lengths, call_cost=16)
    assert sorted(i for run in runs for i in run) == list(range(len(lengths)))  # each request exactly once
    assert all(max(lengths[i] for i in a) <= min(lengths[i] for i in b) for a, b in zip(runs, runs[1:]))
    padded = sum(len(run) * max(lengths[i] for i in run) for run in runs)
    assert 1 < len(runs) and padded + 16 * len(runs) < len(lengths) * 43 + 16  # cheaper than one call padded to 43
    assert length_buckets([10] * 32) == [list(range(32))]  # equal lengths: one call
    assert length_buckets([7]) == [[0]] and length_buckets([]) == []


def test_serve_batch_runs_padded_buckets_with_replies_in_request_order(minilm_embed: Path) -> None:
    """A mixed Triton batch is run as length buckets (no short request padded to the long one), each reply in its
    request's place and equal to that text embedded alone."""
    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner
    from bert_export.serving.textmodel import TextModel

    b = load_bundle(minilm_embed)
    texts = ["Short text.", " ".join(["A much longer sentence about serving embeddings."] * 6), "Hi.", "Tiny."]
    with make_runner(b, "ort", 1) as runner:
        model = TextModel(b, runner, bundle_tokenizer(b))
        alone = [json.loads(model.predict([{"TEXT": t}])[0].json) for t in texts]
        shapes: list[tuple[int, ...]] = []
        infer = runner.infer
        runner.infer = lambda feed: (shapes.append(feed["input_ids"].shape), infer(feed))[1]  # type: ignore[method-assign]
        replies = model.predict([{"TEXT": t.encode()} for t in texts])
    assert len(shapes) == 2 and sorted(rows for rows, _ in shapes) == [1, 3]  # the long text alone
    assert max(width for rows, width in shapes if rows == 3) < 10  # the short three padded to their own longest
    for reply, want in zip(replies, alone):
        assert not reply.error and close(json.loads(reply.json), want)
    assert not any(r.note for r in replies)
    too_long = " ".join(["serving"] * (b.max_seq + 20))
    with make_runner(b, "ort", 1) as runner:
        notes = [
            r.note for r in TextModel(b, runner, bundle_tokenizer(b)).predict([{"TEXT": too_long}, {"TEXT": "Hi."}])
        ]
    assert f"was truncated to this bundle's {b.max_seq}" in notes[0] and not notes[1]  # its own note, not a neighbour's


def test_serve_replicas_run_batches_at_once_with_their_own_tokenizers(minilm_embed: Path) -> None:
    """serve's instances: replicas share the runner (ORT's run is thread-safe), each has its own tokenizer (a Rust
    tokenizer refuses a second thread), replies from concurrent batches equal each text alone; a runtime whose
    infer is not thread-safe is called by one replica at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import bundle_tokenizer, make_runner
    from bert_export.serving.textmodel import TakingTurns, TextModel

    b = load_bundle(minilm_embed)
    texts = [f"Sentence number {i} about {'long ' * (i % 7)}serving." for i in range(24)]
    with make_runner(b, "ort", 1) as runner:
        model = TextModel(b, runner, bundle_tokenizer(b))
        alone = [json.loads(model.predict([{"TEXT": t}])[0].json) for t in texts]
        replicas = model.replicas(3)
        assert len({id(m.tokenizer) for m in replicas}) == 3 and all(m.runner is runner for m in replicas)
        with ThreadPoolExecutor(3) as pool:
            batches = list(pool.map(lambda k: replicas[k % 3].predict([{"TEXT": t} for t in texts[k::6]]), range(6)))
        for k, replies in enumerate(batches):
            for reply, want in zip(replies, alone[k::6]):
                assert not reply.error and close(json.loads(reply.json), want)
        runner.name = "openvino"  # a runtime whose infer is not declared thread-safe
        turns = TextModel(b, runner, bundle_tokenizer(b)).replicas(2)
        assert isinstance(turns[0].runner, TakingTurns) and turns[0].runner is turns[1].runner
        assert turns[0].replicas(2)[1].runner is turns[0].runner  # a Triton relaunch does not wrap it again
        assert close(json.loads(turns[1].predict([{"TEXT": texts[0]}])[0].json), alone[0])
        runner.name = "ort-mobile"  # a CPU InferenceSession on an .ort file: thread-safe like ort
        assert all(m.runner is runner for m in TextModel(b, runner, bundle_tokenizer(b)).replicas(2))
        runner.name = "ort"


def test_serve_bad_options_are_one_line(minilm_embed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bert_export.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(minilm_embed), "--port", "9000", "--grpc-port", "9000"])
    out = capsys.readouterr()
    err = out.out + out.err
    assert exit_.value.code == 2 and "must differ" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(minilm_embed), "--instances", "0"])
    out = capsys.readouterr()
    err = out.out + out.err
    assert exit_.value.code == 2 and "--instances must be 1..16" in err and "Traceback" not in err


def test_missing_serve_extra_is_one_line_before_any_work(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bert_export.cli.main import main
    from bert_export.serving import deps

    monkeypatch.setattr(deps, "missing", lambda server: ["nvidia-pytriton"])
    for argv in (
        ["serve", str(tmp_path / "nope")],
        ["triton", str(tmp_path / "nope"), "--repo", str(tmp_path / "repo")],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        out = capsys.readouterr()
        text = out.out + out.err
        assert (
            exit_.value.code == 2 and "pip install bert-export[serve]" in text and len(text.strip().splitlines()) == 1
        )
    assert not (tmp_path / "repo").exists()


def test_stub_environment_puts_this_interpreters_libpython_first(monkeypatch: pytest.MonkeyPatch) -> None:
    need_server()
    import pytriton.server.triton_server as triton_server

    from bert_export.serving import stubenv

    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere/else")
    libdir = stubenv.libpython_dir()
    original = triton_server.get_triton_python_backend_python_env
    with stubenv.server_environment() as env_root:
        parts = os.environ["LD_LIBRARY_PATH"].split(os.pathsep)
        if libdir is not None:
            assert parts[0] == str(libdir) and "/somewhere/else" in parts
        assert triton_server.get_triton_python_backend_python_env() == env_root
        if stubenv.needs_companion():  # numpy 2 here: the stub gets numpy<2 from its companion venv
            probe = subprocess.run(
                [str(env_root / "bin" / "python"), "-c", "import numpy, pytriton; print(numpy.__version__)"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert probe.returncode == 0 and probe.stdout.startswith("1."), probe.stderr
    assert os.environ["LD_LIBRARY_PATH"] == "/somewhere/else"
    assert triton_server.get_triton_python_backend_python_env is original


# -- bert-export triton: model repositories -------------------------------------------------------


def _with_fake_engine(bundle: Path) -> Path:
    """A bundle copy with an engine record (the bytes are not a real engine: only the repository layout is tested)."""
    import hashlib

    data = b"not a real TensorRT engine"
    (bundle / "model.engine").write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["tensorrt"] = {
        "file": "model.engine",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "tensorrt_version": "10.8.0",
        "gpu": "NVIDIA H100",
        "compute_capability": "9.0",
        "profile": {"min": [1, 1], "opt": [8, 64], "max": [16, 128]},
        "precision": "fp32",
        "strongly_typed": False,
        "onnx_sha256": "",
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle


@pytest.mark.parametrize("task", ["qa", "embed", "seq-cls", "token-cls", "mlm"])
def test_triton_repository_configs_parse_as_model_config(
    task: str, make_bundle: Any, copy_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    from bert_export.cli.main import main
    from bert_export.serving.repository import parse

    bundle = copy_bundle(make_bundle("bert", task))
    repo = tmp_path / "repo"
    with pytest.raises(SystemExit) as exit_:
        main(["triton", str(bundle), "--repo", str(repo), "--name", "m", "--max-batch", "16", "--instances", "2"])
    assert exit_.value.code == 0, capsys.readouterr()
    configs = {p.parent.name: parse(p.read_text()) for p in repo.glob("*/config.pbtxt")}
    assert set(configs) == {"m", "m_tokenize", "m_post", "m_text"}
    graph = configs["m"]
    assert graph.backend == "onnxruntime" and graph.max_batch_size == 16 and (repo / "m/1/model.onnx").is_file()
    assert list(graph.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert graph.instance_group[0].count == 2 and graph.instance_group[0].kind == graph.instance_group[0].KIND_CPU
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    # the ensemble wires every step's inputs to tensors an earlier step produced (or the ensemble's inputs)
    ens = configs["m_text"]
    available = {i.name for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        step_cfg = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in step_cfg.input}, step.model_name
        assert set(step.input_map.values()) <= available, step.model_name
        assert set(step.output_map) <= {o.name for o in step_cfg.output}
        available |= set(step.output_map.values())
    assert {o.name for o in ens.output} <= available
    # the bundle's own tokenizer files and the vendored post-processing rules
    listed = json.loads((bundle / "manifest.json").read_text())["tokenizer"]["files"]
    assert all((repo / "m_tokenize/1/tokenizer" / f).read_bytes() == (bundle / f).read_bytes() for f in listed)
    from bert_export.models import postprocess

    assert (repo / "m_post/1/postprocess.py").read_text() == Path(postprocess.__file__).read_text()
    # an existing model is never overwritten without --force
    with pytest.raises(SystemExit) as exit_:
        main(["triton", str(bundle), "--repo", str(repo), "--name", "m"])
    out = capsys.readouterr()
    assert exit_.value.code == 2 and "--force" in out.out + out.err


def test_triton_tensorrt_repository(
    make_bundle: Any, copy_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    from bert_export.cli.main import main
    from bert_export.serving.repository import parse

    plain = copy_bundle(make_bundle("bert", "seq-cls"))
    with pytest.raises(SystemExit) as exit_:
        main(["triton", str(plain), "--repo", str(tmp_path / "r0"), "--backend", "tensorrt"])
    cap = capsys.readouterr()
    out = cap.out + cap.err
    assert exit_.value.code == 2 and "bert-export engine" in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "r0").exists() or not any((tmp_path / "r0").iterdir())
    bundle = _with_fake_engine(plain)
    with pytest.raises(SystemExit) as exit_:
        main(["triton", str(bundle), "--repo", str(tmp_path / "r"), "--backend", "tensorrt", "--name", "m"])
    assert exit_.value.code == 0, capsys.readouterr()
    graph = parse((tmp_path / "r/m/config.pbtxt").read_text())
    assert graph.backend == "tensorrt" and graph.default_model_filename == "model.plan"
    assert graph.max_batch_size == 16  # capped by the engine profile's max batch
    assert graph.instance_group[0].kind == graph.instance_group[0].KIND_GPU
    assert (tmp_path / "r/m/1/model.plan").read_bytes() == (bundle / "model.engine").read_bytes()
    for name in ("m_tokenize", "m_post", "m_text"):
        parse((tmp_path / "r" / name / "config.pbtxt").read_text())


def test_config_parse_rejects_a_misspelt_field() -> None:
    need_client()
    from google.protobuf import text_format

    from bert_export.serving.repository import parse

    with pytest.raises(text_format.ParseError):
        parse('name: "m"\nmax_batch_sise: 8\n')


@pytest.mark.parametrize("task", ["embed", "qa"])
def test_python_backend_models_load_in_pytritons_tritonserver(task: str, make_bundle: Any, tmp_path: Path) -> None:
    """NAME_tokenize and NAME_post on PyTriton's real tritonserver (Python backend); the graph step in
    between runs here with the bundle's runner, since that binary has no onnxruntime backend."""
    need_client()
    need_server()
    import tritonclient.http as http

    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.factory import make_runner
    from bert_export.serving import tritonbin
    from bert_export.serving.repository import write_repository

    bundle = make_bundle("bert", task, model=MINILM_ID, max_seq=128)
    repo = tmp_path / "repo"
    write_repository(bundle, repo)
    name = [p.name for p in repo.iterdir() if p.name.endswith("_tokenize")][0][: -len("_tokenize")]
    server_dir = tritonbin.prepare_tritonserver(tmp_path / "tritonserver")
    ports = free_ports(3)
    argv, env = tritonbin.command(server_dir, repo, *ports, models=[f"{name}_tokenize", f"{name}_post"])
    log = (tmp_path / "triton.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, (tmp_path / "triton.log").read_text(errors="replace")[-3000:]
            try:
                if all(
                    _get(f"http://127.0.0.1:{ports[0]}/v2/models/{m}/ready")[0] == 200
                    for m in (f"{name}_tokenize", f"{name}_post")
                ):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "triton.log").read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        conn = http.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        b = load_bundle(bundle)

        def call(model: str, tensors: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
            inputs = []
            for k, v in tensors.items():
                inp = http.InferInput(
                    k, list(v.shape), "BYTES" if v.dtype == object else ("INT64" if v.dtype == np.int64 else "FP32")
                )
                inp.set_data_from_numpy(v)
                inputs.append(inp)
            r = conn.infer(model, inputs, outputs=[http.InferRequestedOutput(o) for o in outputs])
            return {o: r.as_numpy(o) for o in outputs}

        aux = ["OFFSETS", "SEQUENCE_IDS", "WORD_IDS", "MASK", "IDS"]
        if task == "qa":
            cases = [({"QUESTION": q, "CONTEXT": c}, ("--question", q, "--context", c)) for q, c in QA[:2]]
        else:
            cases = [({"TEXT": t}, ("--text", t)) for t in TEXTS[:2]]
        with make_runner(b, "ort") as runner:
            for fields, args in cases:
                tok = call(
                    f"{name}_tokenize",
                    {k: np.array([[v.encode()]], dtype=object) for k, v in fields.items()},
                    [s.name for s in b.inputs] + aux + ["NOTE"],
                )
                assert tok["input_ids"].shape == (1, 128)  # padded to max_seq, so the graph model batches
                graph_out = runner.infer({s.name: tok[s.name] for s in b.inputs})
                post_in = {s.name: np.asarray(graph_out[s.name], dtype=np.float32) for s in b.outputs}
                post_in.update({k: tok[k] for k in aux})
                if task == "qa":
                    post_in["CONTEXT"] = np.array([[fields["CONTEXT"].encode()]], dtype=object)
                got = json.loads(call(f"{name}_post", post_in, ["JSON"])["JSON"].reshape(-1)[0].decode())
                assert close(got, run_json(bundle, *args)), (got, args)
            # a bad request gets its own error from the Python backend, and the model keeps answering
            from tritonclient.utils import InferenceServerException

            bad = {
                k: np.array([[b"\xff\xfe"]], dtype=object)
                for k in (["QUESTION", "CONTEXT"] if task == "qa" else ["TEXT"])
            }
            with pytest.raises(InferenceServerException, match="utf-8|decode"):
                call(f"{name}_tokenize", bad, ["NOTE"])
            assert _get(f"http://127.0.0.1:{ports[0]}/v2/models/{name}_tokenize/ready")[0] == 200
        conn.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


# -- bert-export triton: the repository writer is all or nothing (issue 24) ------------------------


def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (dot files included) with its bytes' hash: 'nothing changed' means equal."""
    import hashlib

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def _triton(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    from .test_bad_input import run_cli

    return run_cli(capsys, "triton", *argv)


def _one_line(code: int, err: str, *needles: str) -> None:
    from .test_bad_input import assert_one_error_line

    assert_one_error_line(code, err, *needles)


def test_triton_force_replaces_its_own_models(
    make_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    bundle = make_bundle("bert", "seq-cls")
    repo = tmp_path / "repo"
    assert _triton(capsys, str(bundle), "--repo", str(repo), "--name", "m")[0] == 0
    (repo / "m" / "1" / "stale.txt").write_text("from the previous run")
    code, err = _triton(capsys, str(bundle), "--repo", str(repo), "--name", "m", "--force")
    assert code == 0, err
    assert not (repo / "m" / "1" / "stale.txt").exists() and (repo / "m" / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in repo.iterdir()) == ["m", "m_post", "m_text", "m_tokenize"]


def test_triton_force_never_replaces_the_bundle_it_reads(
    make_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    need_client()
    bundle = tmp_path / "b"
    shutil.copytree(make_bundle("bert", "seq-cls"), bundle)
    before = _tree(tmp_path)
    code, err = _triton(capsys, str(bundle), "--repo", str(tmp_path), "--force")
    _one_line(code, err, "which this command reads")
    code, err = _triton(capsys, str(bundle), "--repo", str(bundle / "onnx"), "--force")
    _one_line(code, err, "--repo", "which this command reads")
    assert _tree(tmp_path) == before


def test_triton_refusal_at_the_third_model_leaves_nothing(
    make_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    repo = tmp_path / "repo"
    (repo / "m_post").mkdir(parents=True)
    (repo / "m_post" / "notes.txt").write_text("a user's model, not ours")
    before = _tree(repo)
    code, err = _triton(capsys, str(make_bundle("bert", "seq-cls")), "--repo", str(repo), "--name", "m", "--force")
    _one_line(code, err, "m_post", "--force replaces only")
    assert _tree(repo) == before


def _engine_record_without(bundle: Path, key: str) -> Path:
    _with_fake_engine(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["tensorrt"][key]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return bundle


@pytest.mark.parametrize(
    "case", ["repo-is-a-file", "repo-under-a-file", "long-name", "trt-no-profile", "trt-no-sha256", "repo-in-bundle"]
)
def test_triton_bad_repo_and_records_are_one_line(
    case: str, make_bundle: Any, copy_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    bundle = copy_bundle(make_bundle("bert", "seq-cls"))
    place = tmp_path / "place"
    place.mkdir()
    (place / "file").write_text("x")
    argv = [str(bundle), "--repo", str(place / "repo")]
    if case == "repo-is-a-file":
        argv[2] = str(place / "file")
    elif case == "repo-under-a-file":
        argv[2] = str(place / "file" / "repo")
    elif case == "long-name":
        argv += ["--name", "n" * 300]
    elif case == "repo-in-bundle":
        argv[2] = str(bundle / "repo")
    else:
        _engine_record_without(bundle, case.rsplit("-", 1)[1])
        argv += ["--backend", "tensorrt"]
    before, bundle_before = _tree(place), _tree(bundle)
    code, err = _triton(capsys, *argv)
    _one_line(code, err)
    assert _tree(place) == before and _tree(bundle) == bundle_before


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_triton_full_or_read_only_repo_is_one_line_and_leaves_nothing(
    how: str, make_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    from .test_publish import tmpfs

    bundle = make_bundle("bert", "seq-cls")
    import contextlib

    with tmpfs(tmp_path / "mnt", 64 if how == "full" else 1024) as mnt:
        (mnt / "repo").mkdir()
        (mnt / "repo" / "other").mkdir()
        (mnt / "repo" / "other" / "config.pbtxt").write_text('name: "other"\n')
        if how == "full":  # every byte used: even the lock's owner record cannot be written
            with open(mnt / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        before = _tree(mnt)
        if how == "read-only" and subprocess.run(["mount", "-o", "remount,ro", str(mnt)]).returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only")
        for repo in (mnt / "repo", mnt / "new" / "repo"):  # an existing repository and one to create
            code, err = _triton(capsys, str(bundle), "--repo", str(repo), "--name", "m")
            _one_line(code, err, "No space left" if how == "full" else "read-only")
            assert _tree(mnt) == before


def _with_external_data(bundle: Path) -> Path:
    """A bundle whose graph keeps its weights in ``onnx/model.onnx_data`` (as large exports do), re-signed."""
    import onnx

    from .conftest import resign

    graph = bundle / "onnx" / "model.onnx"
    model = onnx.load(str(graph))
    onnx.save_model(
        model,
        str(graph),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx_data",
        size_threshold=0,
    )
    assert (bundle / "onnx" / "model.onnx_data").is_file()

    def edit(manifest: dict[str, Any]) -> None:
        for record in [manifest["graph"], *manifest.get("graphs", {}).values()]:
            record["files"] = ["onnx/model.onnx", "onnx/model.onnx_data"]

    resign(bundle, edit)
    return bundle


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_triton_graph_loads_in_onnx_runtime(
    external: bool, make_bundle: Any, copy_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_client()
    import onnxruntime as ort

    from bert_export.bundle.reader import load_bundle

    bundle = copy_bundle(make_bundle("bert", "seq-cls"))
    if external:
        _with_external_data(bundle)
    load_bundle(bundle)  # still a valid bundle
    repo = tmp_path / "repo"
    code, err = _triton(capsys, str(bundle), "--repo", str(repo), "--name", "m")
    assert code == 0, err
    graphs = sorted(repo.glob("*/1/model.onnx"))
    assert graphs == [repo / "m/1/model.onnx"]
    for path in graphs:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {i.name: np.ones((2, 5), dtype=np.int64) for i in session.get_inputs()}
        (logits,) = session.run(None, feed)
        assert logits.shape == (2, 2) and np.isfinite(logits).all()
