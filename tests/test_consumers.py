"""The ecosystem loads bundles as they are, and agrees with ``bert-export run --json``.

Consumers (each installed by .ci/install.d; a missing one skips locally and fails in CI):
- transformers.js in Node: ``pipeline(task, <bundle>)`` for all five tasks, fp32 and int8;
- the browser example (examples/web) in headless Debian chromium, against golden.json and run;
- Optimum's ORTModelFor* and sentence-transformers' ONNX backend, in their own venv;
- OpenVINO reading the ONNX graph with the f32 hint (and the bf16 default that does not agree).

Where a consumer's pipeline legitimately defines a number differently from ours, the test checks
the definition rather than loosening the comparison (see ``hf_qa_score``).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bert_export.bundle import layout
from bert_export.bundle.reader import Bundle, load_bundle
from bert_export.cli.main import cli
from bert_export.exporter.golden import check_golden
from bert_export.runtimes import postprocess as pp
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

from .conftest import MINILM_ID, needs

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "examples" / "web"
NODE_DIR = ROOT / "tests" / "consumers"
NODE_MODULES = WEB / "node_modules"
HF_PYTHON = ROOT / ".ci" / "cache" / "hf-venv" / "bin" / "python"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

TASKS = ["embed", "mlm", "seq-cls", "token-cls", "qa"]
PRECISIONS = ["fp32", "int8"]
JS_TASK = {
    "embed": "feature-extraction",
    "mlm": "fill-mask",
    "seq-cls": "text-classification",
    "token-cls": "token-classification",
    "qa": "question-answering",
}
# transformers.js' dtype names for our precisions (the file it then opens under onnx/).
JS_DTYPE = {"fp32": "fp32", "fp16": "fp16", "int8": "q8"}
# Same graph, same inputs, two builds of ONNX Runtime: results must agree to float32 noise.
RAW_TOL = 1e-4
# ...except int8 between native x86 kernels and the WASM build: dynamic quantization of the
# activations can round a value on a .5 boundary the other way, and that one quantization step
# travels through the later layers. Measured on MiniLM golden texts: 2 of 4 embeddings identical
# to 5e-7, the others max abs 8.5e-4 / 2.2e-3 with cosine 0.99999 / 0.99992 (both builds are
# equally close to the fp32 reference: cosine 0.9990-0.9996, the int8 gate is 0.995). Since the
# residual norms are the standard LayerNormalization (quantize/fusion.py, skip_layer_norm_as_sum),
# whose WASM and x86 kernels sum in different orders, embed-2 drifts to max abs 3.5e-3, cosine 0.99982.
WASM_INT8 = {"max_abs": 5e-3, "cosine_min": 0.9995}

# The last text runs past the bundles' 128 tokens: every consumer must truncate where run does
# (tokenizer_config.json / sentence_bert_config.json carry the bundle's maximum).
LONG_TEXT = " ".join(["The committee discussed the annual budget and new proposals for the city park."] * 12)
EMBED_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi!",
    "Paris is the capital and most populous city of France, with two million residents.",
    LONG_TEXT,
]
MLM_TEXTS = ["Paris is the [MASK] of France.", "The cat sat on the [MASK] all afternoon."]
SEQ_TEXTS = ["I loved this film, the acting was superb.", "Terrible service; never again.", "It is a book."]
TOKEN_TEXTS = [
    "Wolfgang Amadeus lives in Berlin and works for Siemens.",
    "Hugging Face Inc. is a company based in New York City.",
]
# Contexts shorter than 30 tokens: transformers.js has no answer-length limit (ours is 30 tokens).
QA_CASES = [
    {"question": "What is the capital of France?", "context": "Paris is the capital and most populous city of France."},
    {
        "question": "When did Marie Curie win the Nobel Prize in chemistry?",
        "context": "Marie Curie won the Nobel Prize in physics in 1903 and in chemistry in 1911.",
    },
]


# --------------------------------------------------------------------------- bundles and run --json


@pytest.fixture(scope="module")
def minilm(make_bundle: Callable[..., Path]) -> Callable[[str], Path]:
    """``minilm(task)`` -> a real-MiniLM bundle with an fp32 (default) and an int8 graph.

    One directory per task serving both precisions, as a model hub does: consumers pick the int8
    graph by its name (transformers.js dtype "q8", Optimum/ST file_name), run by --precision.
    """

    def get(task: str) -> Path:
        # more than 2 labels: transformers 5 leaves the default 2-label id2label out of config.json
        extra = {"seq-cls": {"num_labels": 3}, "token-cls": {"num_labels": 5}}.get(task, {})
        # embed: the same arguments as tests/test_layout.py's bundle, so a full run exports it once
        precisions = "fp32,fp16,int8" if task == "embed" else ",".join(PRECISIONS)
        return make_bundle("bert", task, model=MINILM_ID, max_seq=128, precisions=precisions, **extra)

    return get


def run_json(bundle: Path, precision: str, *args: str) -> list[dict[str, Any]]:
    """What ``bert-export run BUNDLE --json --precision P ARGS`` prints, one dict per line (in-process)."""
    res = CliRunner().invoke(
        cli, ["run", str(bundle), "--json", "--precision", precision, *args], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def inputs_for(task: str) -> Any:
    return (
        QA_CASES
        if task == "qa"
        else {"embed": EMBED_TEXTS, "mlm": MLM_TEXTS, "seq-cls": SEQ_TEXTS, "token-cls": TOKEN_TEXTS}[task]
    )


def run_task(bundle: Path, task: str, precision: str) -> list[dict[str, Any]]:
    """run --json on this module's inputs for ``task`` (qa: one result per case)."""
    if task == "qa":
        return [
            run_json(bundle, precision, "--question", c["question"], "--context", c["context"])[0] for c in QA_CASES
        ]
    return run_json(bundle, precision, *[a for t in inputs_for(task) for a in ("--text", t)])


def graph_logits(b: Bundle, enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    feed = {s.name: np.asarray(enc.get(s.name, np.zeros_like(enc["input_ids"])), dtype=np.int64) for s in b.inputs}
    with make_runner(b, "ort", threads=1) as runner:
        return runner.infer(feed)


def hf_qa_score(start: np.ndarray, end: np.ndarray, context: np.ndarray, i: int, j: int) -> float:
    """The question-answering score of HF's pipelines (Python and transformers.js) for span i..j.

    They softmax over [CLS] plus the context tokens (then drop [CLS] as an answer); ours softmaxes
    over the context tokens only. The best span is the same (a common factor), the score is not.
    """
    keep = context.copy()
    keep[0] = True
    ps, pe = pp.softmax(np.where(keep, start, -np.inf)), pp.softmax(np.where(keep, end, -np.inf))
    return float(ps[i] * pe[j])


# --------------------------------------------------------------------------- transformers.js (Node)


def node_ready() -> bool:
    return shutil.which("node") is not None and (NODE_MODULES / "@huggingface" / "transformers").is_dir()


def run_node(script: str, *args: str, timeout: int = 240) -> Any:
    proc = subprocess.run(
        ["node", str(NODE_DIR / script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def js_results(minilm: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """transformers.js results per precision: one Node process runs all five tasks (cached)."""
    cache: dict[str, dict[str, Any]] = {}

    def get(precision: str) -> dict[str, Any]:
        needs(node_ready(), "node + examples/web/node_modules missing (run .ci/install.d/30-node.sh)")
        if precision not in cache:
            jobs = []
            for task in TASKS:
                bundle = minilm(task)
                options: dict[str, Any] = {}
                if task == "embed":
                    pooling = load_bundle(bundle).manifest["pooling"]
                    options = {"pooling": pooling["mode"], "normalize": bool(pooling["normalize"])}
                elif task == "token-cls":
                    options = {"ignore_labels": []}  # every token: we rebuild words and entities ourselves
                elif task == "mlm":
                    options = {"top_k": 5}
                # fp32, the bundle's default: dtype None, so config.json (transformers.js_config) decides
                # and the pipeline gets no extra arguments; int8: transformers.js' own dtype name.
                dtype = None if precision == PRECISIONS[0] else JS_DTYPE[precision]
                jobs.append(
                    {
                        "model": str(bundle),
                        "task": JS_TASK[task],
                        "dtype": dtype,
                        "inputs": inputs_for(task),
                        "options": options,
                    }
                )
            path = tmp_path_factory.mktemp("js") / f"jobs-{precision}.json"
            path.write_text(json.dumps(jobs))
            cache[precision] = {r["task"]: r for r in run_node("node/pipeline.mjs", str(path))}
        return cache[precision]

    return get


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", TASKS)
def test_transformers_js_pipeline_agrees_with_run(
    task: str, precision: str, minilm: Callable[[str], Path], js_results: Callable[[str], dict]
) -> None:
    bundle = minilm(task)
    res = js_results(precision)[JS_TASK[task]]
    js = res["outputs"]
    assert res["files"] == [layout.graph_file(precision)]  # the graph it really opened
    ours = run_task(bundle, task, precision)
    b = load_bundle(bundle, precision=precision)
    tok = bundle_tokenizer(b)
    if task == "embed":
        got, want = np.asarray(js[0]), np.asarray(ours[0]["embeddings"])
        assert got.shape == want.shape == (len(EMBED_TEXTS), b.manifest["config"]["hidden_size"])
        assert np.abs(got[:-1] - want[:-1]).max() <= RAW_TOL
        _check_js_truncation(b, tok, got[-1], want[-1])
    elif task == "mlm":
        for fills, row in zip(js, ours):
            assert [c["token"] for c in fills] == [c["id"] for c in row["fills"][0]["candidates"]]
            assert np.allclose(
                [c["score"] for c in fills], [c["score"] for c in row["fills"][0]["candidates"]], atol=RAW_TOL
            )
    elif task == "seq-cls":
        for (top,), row in zip(js, ours):
            assert top["label"] == row["label"]
            assert abs(top["score"] - row["score"]) <= RAW_TOL
    elif task == "token-cls":
        _check_token_cls(b, tok, js, ours)
    else:
        _check_qa(b, tok, js, ours)


def test_transformers_js_fp16_embeddings_agree_with_run(minilm: Callable[[str], Path], tmp_path: Path) -> None:
    """The embed bundle also has an fp16 graph: dtype "fp16" opens onnx/model_fp16.onnx."""
    needs(node_ready(), "node + examples/web/node_modules missing (run .ci/install.d/30-node.sh)")
    bundle = minilm("embed")
    pooling = load_bundle(bundle).manifest["pooling"]
    job = {
        "model": str(bundle),
        "task": JS_TASK["embed"],
        "dtype": JS_DTYPE["fp16"],
        "inputs": EMBED_TEXTS[:-1],
        "options": {"pooling": pooling["mode"], "normalize": bool(pooling["normalize"])},
    }
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    (res,) = run_node("node/pipeline.mjs", str(tmp_path / "jobs.json"))
    assert res["files"] == [layout.graph_file("fp16")]
    ours = run_json(bundle, "fp16", *[a for t in EMBED_TEXTS[:-1] for a in ("--text", t)])[0]["embeddings"]
    assert np.abs(np.asarray(res["outputs"][0]) - np.asarray(ours)).max() <= RAW_TOL


def _check_js_truncation(b: Bundle, tok: Any, got: np.ndarray, ours: np.ndarray) -> None:
    """LONG_TEXT: transformers.js (4.3) truncates after adding the special tokens, so it cuts the
    closing [SEP] that Python's tokenizers keep. Its vector is exactly our graph's on those ids
    (that is the only difference), and the difference is real (not within float noise)."""
    ids = tok(LONG_TEXT, truncation=False)["input_ids"][: b.max_seq]
    assert len(ids) == b.max_seq and ids[-1] != b.manifest["special_tokens"]["sep"]
    feed = {
        "input_ids": np.array([ids]),
        "attention_mask": np.ones((1, len(ids)), np.int64),
        "token_type_ids": np.zeros((1, len(ids)), np.int64),
    }
    pooling = b.manifest["pooling"]
    js_way = pp.pool(
        graph_logits(b, feed)["last_hidden_state"], feed["attention_mask"], pooling["mode"], bool(pooling["normalize"])
    )[0]
    assert np.abs(got - js_way).max() <= RAW_TOL
    assert np.abs(got - ours).max() > 10 * RAW_TOL


def _check_token_cls(b: Bundle, tok: Any, js: list[list[dict]], ours: list[dict]) -> None:
    """transformers.js gives per-token labels (no word grouping): rebuild ours from them and compare.

    Each token's (label, probability) from Node becomes a logit row whose softmax puts that
    probability on that label; our own token_cls_result then groups words and entities, so the
    entities must be identical to run's (labels, spans, text) with scores within float noise.
    """
    label2id = {v: int(k) for k, v in b.read_json("config.json")["id2label"].items()}
    assert len(label2id) == b.manifest["labels"]["num_labels"]
    id2label = {str(i): lab for lab, i in label2id.items()}
    n = len(label2id)
    for text, tokens, row in zip(TOKEN_TEXTS, js, ours):
        enc = tok(text, return_offsets_mapping=True)
        logits = np.full((len(enc["input_ids"]), n), -1e9)
        for t in tokens:
            p = min(max(float(t["score"]), 1e-12), 1 - 1e-12)
            logits[t["index"]] = np.log((1 - p) / max(n - 1, 1))
            logits[t["index"], label2id[t["entity"]]] = np.log(p)
        # every non-special token came back from Node (ignore_labels=[]), at the same positions
        words = [i for i, w in enumerate(enc.word_ids()) if w is not None]
        assert sorted(t["index"] for t in tokens) == words
        rebuilt = pp.token_cls_result(logits, enc.word_ids(), enc["offset_mapping"], text, id2label)["entities"]
        assert [(e["label"], e["start"], e["end"], e["text"]) for e in rebuilt] == [
            (e["label"], e["start"], e["end"], e["text"]) for e in row["entities"]
        ]
        assert np.allclose([e["score"] for e in rebuilt], [e["score"] for e in row["entities"]], atol=RAW_TOL)


def _check_qa(b: Bundle, tok: Any, js: list[dict], ours: list[dict]) -> None:
    """Same span; transformers.js' answer is the decoded span tokens and its score HF's (hf_qa_score)."""
    for case, got, row in zip(QA_CASES, js, ours):
        enc = tok(case["question"], case["context"], return_offsets_mapping=True, return_tensors="np")
        out = graph_logits(b, enc)
        start, end = out["start_logits"][0], out["end_logits"][0]
        context = np.array([s == 1 for s in enc.sequence_ids(0)])
        i, j, _ = pp.best_span(start, end, context)
        offsets = enc["offset_mapping"][0]
        assert (int(offsets[i][0]), int(offsets[j][1])) == (row["start"], row["end"])  # our runner == run
        assert got["answer"] == tok.decode(enc["input_ids"][0][i : j + 1], skip_special_tokens=True)
        assert abs(got["score"] - hf_qa_score(start, end, context, i, j)) <= RAW_TOL
        assert got["score"] <= row["score"] + RAW_TOL  # [CLS] in the softmax can only lower it


# --------------------------------------------------------------------------- browser (chromium)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves examples/web, and /bundles/<name>/... from the registered bundle directories only."""

    bundles: dict[str, Path] = {}

    def translate_path(self, path: str) -> str:
        parts = path.split("?", 1)[0].split("#", 1)[0].lstrip("/").split("/")
        if len(parts) >= 2 and parts[0] == "bundles" and parts[1] in self.bundles:
            rest = [p for p in parts[2:] if p not in ("", ".", "..")]
            return str(self.bundles[parts[1]].joinpath(*rest))
        return super().translate_path(path)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web_server() -> Iterator[tuple[str, dict[str, Path]]]:
    """examples/web on 127.0.0.1 at a free port, from a thread of this process."""
    handler = type("Handler", (_Handler,), {"bundles": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(WEB)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.bundles
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser_results(
    minilm: Callable[[str], Path], web_server: tuple[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], dict[str, Any]]:
    needs(
        node_ready() and (NODE_MODULES / "puppeteer-core").is_dir(),
        "puppeteer-core missing (run .ci/install.d/30-node.sh)",
    )
    needs(CHROMIUM.exists(), f"{CHROMIUM} missing (run .ci/install.d/31-chromium.sh)")
    base, served = web_server
    keys = [(task, precision) for task in ("qa", "embed") for precision in PRECISIONS]
    urls = []
    for task, precision in keys:
        served[task] = minilm(task)
        urls.append(f"{base}/index.html?model=bundles/{task}&precision={precision}&check=golden")
    shots = tmp_path_factory.mktemp("browser")
    states = run_node("browser.mjs", "--screenshots", str(shots), *urls)
    return dict(zip(keys, states))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", ["qa", "embed"])
def test_browser_example_matches_golden_and_run(
    task: str, precision: str, minilm: Callable[[str], Path], browser_results: dict
) -> None:
    state = browser_results[(task, precision)]
    assert state["status"] == "done", (state.get("error"), state.get("console"))
    assert state["file"] == layout.graph_file(precision)
    bundle = minilm(task)
    b = load_bundle(bundle, precision=precision)
    golden = b.read_json("golden.json")
    tol = golden["tolerances"][precision]
    rows = state["golden"]["rows"]
    assert [r["name"] for r in rows] == [e["name"] for e in golden["examples"]]
    assert all(r["ids_match"] for r in rows), "the JS tokenizer gave other token ids than the bundle's"
    for row, ex in zip(rows, golden["examples"]):
        if task == "qa":
            # golden.json is PyTorch fp32; int8 may pick another span ("exact_results": false),
            # so the int8 page is held to run --json on the same graph instead.
            ours = run_json(bundle, precision, "--question", ex["question"], "--context", ex["context"])[0]
            assert (row["answer"], row["start"], row["end"]) == (ours["answer"], ours["start"], ours["end"])
            assert abs(row["score"] - ours["score"]) <= RAW_TOL
            if tol["exact_results"]:
                assert (row["answer"], row["start"], row["end"]) == (
                    ex["result"]["answer"],
                    ex["result"]["start"],
                    ex["result"]["end"],
                )
                assert abs(row["score"] - ex["result"]["score"]) <= tol["result_abs"]
        else:
            got, want = np.asarray(row["embedding"]), np.asarray(ex["result"]["embeddings"][0])
            if tol["max_abs"] is not None:
                assert np.abs(got - want).max() <= tol["max_abs"]
            assert got @ want / np.linalg.norm(got) / np.linalg.norm(want) >= tol["cosine_min"]
            ours = np.asarray(run_json(bundle, precision, "--text", ex["text"])[0]["embeddings"][0])
            if precision == "int8":
                cosine = got @ ours / np.linalg.norm(got) / np.linalg.norm(ours)
                drift = (ex["name"], float(np.abs(got - ours).max()), float(cosine))
                assert drift[1] <= WASM_INT8["max_abs"] and cosine >= WASM_INT8["cosine_min"], drift
            else:
                assert np.abs(got - ours).max() <= RAW_TOL
    assert state["golden"]["passed"] or not tol["exact_results"]


# --------------------------------------------------------------------------- Optimum, sentence-transformers


@pytest.fixture(scope="module")
def hf_results(minilm: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One subprocess in the HF venv loads every bundle with ORTModelFor* / SentenceTransformer."""
    needs(HF_PYTHON.exists(), f"{HF_PYTHON} missing (run .ci/install.d/32-hf-venv.sh)")
    jobs = []
    for precision in PRECISIONS:
        for task in TASKS:
            # fp32 (onnx/model.onnx) loads with no extra arguments; other precisions are chosen the
            # libraries' documented way, by file name.
            file_name = None if precision == PRECISIONS[0] else layout.graph_file(precision)
            jobs.append(
                {
                    "bundle": str(minilm(task)),
                    "task": task,
                    "inputs": inputs_for(task),
                    "file_name": file_name,
                    "precision": precision,
                }
            )
    jobs.append(
        {
            "bundle": str(minilm("embed")),
            "task": "embed",
            "inputs": EMBED_TEXTS,
            "file_name": layout.graph_file("fp16"),
            "precision": "fp16",
        }
    )
    path = tmp_path_factory.mktemp("hf") / "jobs.json"
    path.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [str(HF_PYTHON), str(NODE_DIR / "hf_consumers.py"), str(path)],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        cwd=path.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(job["task"], job["precision"]): res for job, res in zip(jobs, json.loads(proc.stdout))}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("task", TASKS)
def test_optimum_and_sentence_transformers_agree_with_run(
    task: str, precision: str, minilm: Callable[[str], Path], hf_results: dict
) -> None:
    bundle = minilm(task)
    res = hf_results[(task, precision)]
    got = res["outputs"]
    assert Path(res["model_path"]) == bundle / layout.graph_file(precision)
    ours = run_task(bundle, task, precision)
    b = load_bundle(bundle, precision=precision)
    if task == "embed":
        assert res["modules"][-1] == ("Normalize" if b.manifest["pooling"]["normalize"] else "Pooling")
        assert np.abs(np.asarray(got) - np.asarray(ours[0]["embeddings"])).max() <= RAW_TOL
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    elif task == "mlm":
        for fills, row in zip(got, ours):
            assert [c["id"] for c in fills] == [c["id"] for c in row["fills"][0]["candidates"]]
            assert np.allclose(
                [c["score"] for c in fills], [c["score"] for c in row["fills"][0]["candidates"]], atol=RAW_TOL
            )
    elif task == "seq-cls":
        for top, row in zip(got, ours):
            assert (top["label"], round(top["score"], 4)) == (row["label"], round(row["score"], 4))
    elif task == "token-cls":
        # aggregation_strategy="first" is our grouping: identical entities, scores within noise.
        for ents, row in zip(got, ours):
            assert [(e["entity_group"], e["start"], e["end"]) for e in ents] == [
                (e["label"], e["start"], e["end"]) for e in row["entities"]
            ]
            assert np.allclose([e["score"] for e in ents], [e["score"] for e in row["entities"]], atol=RAW_TOL)
    else:
        for case, got_qa, row in zip(QA_CASES, got, ours):
            assert (got_qa["answer"], got_qa["start"], got_qa["end"]) == (row["answer"], row["start"], row["end"])
            start, end = np.asarray(got_qa["start_logits"]), np.asarray(got_qa["end_logits"])
            tok = bundle_tokenizer(b)
            enc = tok(case["question"], case["context"], return_offsets_mapping=True)
            assert got_qa["input_ids"] == enc["input_ids"]
            context = np.array([s == 1 for s in enc.sequence_ids(0)])
            i, j, ours_score = pp.best_span(start, end, context)
            assert abs(ours_score - row["score"]) <= RAW_TOL  # Optimum's logits give run's score by our definition
            assert abs(got_qa["score"] - hf_qa_score(start, end, context, i, j)) <= RAW_TOL  # and HF's by theirs


def test_sentence_transformers_fp16_graph_agrees_with_run(minilm: Callable[[str], Path], hf_results: dict) -> None:
    res = hf_results[("embed", "fp16")]
    assert Path(res["model_path"]) == minilm("embed") / layout.graph_file("fp16")
    ours = run_task(minilm("embed"), "embed", "fp16")[0]["embeddings"]
    assert np.abs(np.asarray(res["outputs"]) - np.asarray(ours)).max() <= RAW_TOL


# --------------------------------------------------------------------------- OpenVINO


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        needs(False, "openvino missing (run .ci/install.d/50-openvino.sh)")
    return openvino


class OpenVinoRunner:
    """The bundle's graph compiled by OpenVINO, shaped like our Runner for ``check_golden``."""

    def __init__(self, b: Bundle, hint: str | None) -> None:
        ov = _openvino()
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
        self.inputs = b.inputs
        self.compiled = core.compile_model(core.read_model(str(b.model_path)), "CPU", config)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.compiled(feed)
        return {o.get_any_name(): np.asarray(v) for o, v in out.items()}


def _same_span_up_to_noise(
    got: dict[str, np.ndarray], want: dict[str, np.ndarray], context: np.ndarray, name: str
) -> None:
    """The same answer span, unless the reference's top spans are closer than the two runtimes' logit noise.

    A span's log-score is a start plus an end log-probability. Two int8 lowerings that differ by at most ``d``
    per logit move each log-softmax by at most ``2 d``, so each span's score by at most ``4 d``; for each to
    prefer its own span, the reference's scores of the two must be within ``8 d``. MiniLM qa-0's two best
    ends are 0.006 apart in fp32: either may win, a distant span may not.
    """
    (gs, ge, _), (ws, we, _) = (pp.best_span(o["start_logits"][0], o["end_logits"][0], context) for o in (got, want))
    if (gs, ge) == (ws, we):
        return
    d = max(float(np.abs(got[k][0] - want[k][0])[context].max()) for k in ("start_logits", "end_logits"))
    idx = np.flatnonzero(context)
    ls, le = (want[k][0][idx] - np.log(np.exp(want[k][0][idx]).sum()) for k in ("start_logits", "end_logits"))

    def log_score(s: int, e: int) -> float:
        return float(ls[np.searchsorted(idx, s)] + le[np.searchsorted(idx, e)])

    gap = log_score(ws, we) - log_score(gs, ge)
    assert gap <= 8 * d, (name, (gs, ge), (ws, we), gap, d)


def openvino_golden(bundle: Path, hint: str | None, precision: str = "fp32") -> list[str]:
    """The bundle's own golden check (exporter.golden.check_golden) with OpenVINO as the runtime."""
    b = load_bundle(bundle, precision=precision)
    return check_golden(b, OpenVinoRunner(b, hint), b.precision)


@pytest.mark.parametrize("task", ["qa", "embed"])
def test_openvino_reads_fp32_bundle_and_passes_golden_with_f32_hint(task: str, minilm: Callable[[str], Path]) -> None:
    """read_model on the graph as shipped (com.microsoft fused ops included), f32 inference:
    the bundle's own fp32 golden check (max abs 1e-4) passes."""
    assert openvino_golden(minilm(task), "f32") == []


@pytest.mark.parametrize("task", ["qa", "embed"])
def test_openvino_runs_int8_bundle_like_ort(task: str, minilm: Callable[[str], Path]) -> None:
    """int8 graph: OpenVINO (f32 hint) against ONNX Runtime on the same graph and golden inputs.

    OpenVINO lowers the dynamic activation quantization its own way, so the two int8 results
    differ at int8 noise (measured cosine 0.9971 to 0.9999 on MiniLM), not float noise; the bound is
    golden.json's int8 cosine tolerance, and qa spans must agree.
    Not golden.json's int8 floor: see the report (ORT itself is at 0.9947 on MiniLM qa-2).
    """
    b = load_bundle(minilm(task), precision="int8")
    ov = OpenVinoRunner(b, "f32")
    golden = b.read_json("golden.json")
    floor = golden["tolerances"]["int8"]["cosine_min"]  # the int8 consumer tolerance (measured 0.9971..0.9999 here)
    with make_runner(b, "ort", threads=1) as ort_runner:
        for ex in golden["examples"]:
            feed = {s.name: np.asarray([ex[s.name]], dtype=np.int64) for s in b.inputs}
            got, want = ov.infer(feed), ort_runner.infer(feed)
            for name in ex["outputs"]:
                g, w = got[name].astype(np.float64).ravel(), want[name].astype(np.float64).ravel()
                cosine = g @ w / np.linalg.norm(g) / np.linalg.norm(w)
                assert cosine >= floor, (ex["name"], name, cosine)
            if task == "qa":
                context = np.asarray(ex["token_type_ids"]) == 1
                context[-1] = False  # the closing [SEP]
                _same_span_up_to_noise(got, want, context, ex["name"])


def test_openvino_default_bf16_fails_fp32_golden(minilm: Callable[[str], Path]) -> None:
    """Why the f32 hint matters: on CPUs with bf16, OpenVINO's default inference precision is bf16."""
    ov = _openvino()
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: OpenVINO's default is already f32 here")
    problems = openvino_golden(minilm("qa"), None)
    assert any("max abs diff" in p for p in problems), problems


# --------------------------------------------------------------------------- the page's JS post-processing


def test_web_postprocess_equals_python(tmp_path: Path, minilm_dir: Path) -> None:
    """examples/web/postprocess.js gives runtimes/postprocess.py's spans, pooling and character spans."""
    needs(shutil.which("node") is not None, "node missing (run .ci/install.d/30-node.sh)")
    rng = np.random.default_rng(0)
    spans = []
    for n in (1, 5, 40, 90):
        mask = rng.random(n) < 0.7
        start, end = rng.normal(size=n), rng.normal(size=n)
        if n == 40:
            start[:] = 0.5  # all ties: the first span in row-major order wins
        spans.append({"start": start.tolist(), "end": end.tolist(), "mask": mask.tolist(), "max_tokens": 30})
    spans.append({"start": [1.0, 2.0], "end": [1.0, 2.0], "mask": [False, False], "max_tokens": 30})
    pools = []
    for mode in ("cls", "mean", "max", "mean_sqrt_len"):
        for normalize in (False, True):
            hidden = rng.normal(size=(3, 6, 8)).astype(np.float32)
            mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
            pools.append(
                {
                    "hidden": hidden.tolist(),
                    "dims": [3, 6, 8],
                    "mask": mask.tolist(),
                    "mode": mode,
                    "normalize": normalize,
                }
            )
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    texts = [
        "Paris is the capital of France.",
        "Crème brûlée, naïve café — 3.5% of Zürich's GDP!",
        "Marie Curie won the Nobel Prize in 1911.",
        "unaffable  tokenization   spaces\tand ✓ marks",
    ]
    offsets = [{"text": t, "tokens": tok.tokenize(t), "prefix": "##"} for t in texts]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps({"spans": spans, "pools": pools, "offsets": offsets}))
    js = run_node("node/postprocess_cases.mjs", str(path))
    for case, got in zip(spans, js["spans"]):
        want = pp.best_span(np.array(case["start"]), np.array(case["end"]), np.array(case["mask"]))
        assert (got is None) == (want is None)
        if want is not None:
            assert got[:2] == list(want[:2]) and abs(got[2] - want[2]) <= 1e-12
    for case, got in zip(pools, js["pools"]):
        want = pp.pool(
            np.array(case["hidden"], dtype=np.float32), np.array(case["mask"]), case["mode"], case["normalize"]
        )
        assert np.abs(np.array(got) - want).max() <= 1e-9
    for case, got in zip(offsets, js["offsets"]):
        want = [
            list(o) for o in tok(case["text"], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        ]
        assert got == want, case["text"]
