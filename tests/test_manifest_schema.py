"""One manifest schema for both readers.

* docs/manifest.schema.json is the JSON Schema exported from bundle/manifest.py's pydantic model
  (``python -m bert_export.bundle.manifest --schema``): regenerated here and required equal.
* The C++ demo keeps its own hand-written reader (examples/cpp/src/bundle.cpp ``check_manifest``, no
  schema library), so a differential test holds the two to one schema: hypothesis takes real
  exported manifests (schema 2, and each rewritten as the schema-1 layout it replaces), mutates them
  (wrong types, missing and extra keys, bad paths, out-of-range numbers, schema 1 vs 2, ...) and
  requires the Python reader (``validate_manifest``) and the C++ one to accept and reject the same
  manifests. The C++ side is ``bx_manifest_check`` (built by examples/cpp/build.sh), one process for
  the whole module: a manifest per line on its stdin, a verdict per line back.

Cost: three tiny exports (shared with other modules through make_bundle), the C++ build (~1 s when
examples/cpp/build is warm), a few seconds of hypothesis.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bert_export.bundle.manifest import json_schema, schema_text, strict_json, validate_manifest
from bert_export.models import BertExportError
from bert_export.quantize.pipeline import OptimizeOptions

from .conftest import build_cpp_target

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "examples" / "cpp"
SCHEMA_FILE = ROOT / "docs" / "manifest.schema.json"
EXAMPLES = int(os.environ.get("BERT_EXPORT_MANIFEST_EXAMPLES", "400"))


def test_committed_json_schema_is_the_models() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "docs/manifest.schema.json is stale: run python -m bert_export.bundle.manifest --schema > docs/manifest.schema.json"
    )


def test_schema_module_prints_the_schema() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bert_export.bundle.manifest", "--schema"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema == json_schema()
    assert set(schema["required"]) >= {"schema_version", "family", "task", "inputs", "outputs", "graph", "files"}
    assert schema["properties"]["precision"]["enum"] == [
        "fp32",
        "fp16",
        "int8",
        "bf16",
    ]  # bf16: an OpenVINO bundle built with --bf16


# --------------------------------------------------------------------------- the two readers


class CppReader:
    """bx_manifest_check over a pipe: one manifest per line in, ``ok`` / ``error: ...`` per line out."""

    def __init__(self, binary: Path) -> None:
        self.proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",  # an error line is read for its verdict only
            bufsize=1,
        )

    def check(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"bx_manifest_check exited ({self.proc.poll()}) on {text[:200]}"
        return line.rstrip("\n")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def cpp_reader() -> Iterator[CppReader]:
    """examples/cpp/build.sh's bx_manifest_check target (idempotent, ~1 s when built), one process for the module."""
    reader = CppReader(build_cpp_target("bx_manifest_check", "the C++ manifest reader"))
    yield reader
    reader.close()


def python_verdict(text: str) -> str:
    try:
        validate_manifest(strict_json(text.encode("utf-8"), "manifest.json"), "manifest.json")
    except BertExportError as exc:
        return f"error: {exc}"
    return "ok"


def verdicts(cpp_reader: CppReader, manifest: Any) -> tuple[str, str]:
    text = json.dumps(manifest, ensure_ascii=True, allow_nan=False)
    return python_verdict(text), cpp_reader.check(text)


def assert_agree(cpp_reader: CppReader, manifest: Any) -> bool:
    """Both readers give the same verdict; returns whether they accept."""
    py, cc = verdicts(cpp_reader, manifest)
    assert (py == "ok") == (cc == "ok"), f"python: {py}\nc++:    {cc}\nmanifest: {json.dumps(manifest)[:3000]}"
    return py == "ok"


# --------------------------------------------------------------------------- valid manifests


def as_schema_1(manifest: dict[str, Any]) -> dict[str, Any]:
    """The schema-1 form of a schema-2 manifest: one graph at its precision, no ``graphs``."""
    old = copy.deepcopy(manifest)
    old["schema_version"] = 1
    old.pop("graphs", None)
    return old


def with_int8_graph(manifest: dict[str, Any]) -> dict[str, Any]:
    """A second precision beside the default one (files disjoint, listed), as ``--precisions fp32,int8`` writes."""
    more = copy.deepcopy(manifest)
    graph = {"file": "onnx/model_quantized.onnx", "files": ["onnx/model_quantized.onnx"], "nodes": 9, "ops": {}}
    more["graphs"]["int8"] = {**graph, "outputs": copy.deepcopy(more["outputs"])}
    more["files"]["onnx/model_quantized.onnx"] = {"sha256": "0" * 64, "bytes": 123}
    return more


@pytest.fixture(scope="module")
def valid_manifests(make_bundle: Callable[..., Path]) -> list[dict[str, Any]]:
    real = [
        json.loads((make_bundle(family, task) / "manifest.json").read_text(encoding="utf-8"))
        for family, task in (("bert", "qa"), ("bert", "seq-cls"), ("modernbert", "embed"))
    ]
    # an ORT-format graph with its operator set (--runtime ort-mobile: graph.required_operators)
    mobile = make_bundle("bert", "seq-cls", optimization=OptimizeOptions(runtime="ort-mobile"))
    ort_format = json.loads((mobile / "manifest.json").read_text(encoding="utf-8"))
    return real + [as_schema_1(m) for m in real] + [with_int8_graph(real[0]), ort_format]


def test_real_manifests_are_accepted_by_both(cpp_reader: CppReader, valid_manifests: list[dict[str, Any]]) -> None:
    for manifest in valid_manifests:
        py, cc = verdicts(cpp_reader, manifest)
        assert py == cc == "ok", (py, cc, manifest.get("family"), manifest.get("task"), manifest.get("schema_version"))


# --------------------------------------------------------------------------- named mutations


def _set(*at: Any, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        _get(m, at[:-1])[at[-1]] = value

    return edit


def _drop(*at: Any) -> Callable[[dict[str, Any]], None]:
    def edit(m: dict[str, Any]) -> None:
        del _get(m, at[:-1])[at[-1]]

    return edit


def _schema_1_with_graphs(m: dict[str, Any]) -> None:
    m["schema_version"] = 1


def _schema_2_without_graphs(m: dict[str, Any]) -> None:
    del m["graphs"]


def _unlisted_graph(m: dict[str, Any]) -> None:
    del m["files"][m["graph"]["file"]]


def _graph_file_object(m: dict[str, Any]) -> None:
    m["graph"]["file"] = {m["precision"]: m["graph"]["file"]}


def _drop_a_family_input(m: dict[str, Any]) -> None:
    m["inputs"] = [t for t in m["inputs"] if t["name"] != "token_type_ids"]


def _shared_graph_file(m: dict[str, Any]) -> None:
    m["graphs"]["int8"] = copy.deepcopy(m["graphs"]["fp32"])


_OPS = {"ai.onnx;13": ["Gather", "MatMul"], "com.microsoft;1": ["Attention", "SkipLayerNormalization"]}

# (edit, python and C++ must both accept?) on the bert qa manifest (schema 2, fp32)
NAMED: dict[str, tuple[Callable[[dict[str, Any]], None], bool]] = {
    "schema-1 with graphs": (_schema_1_with_graphs, False),
    "schema-2 without graphs": (_schema_2_without_graphs, False),
    "schema_version 3": (_set("schema_version", value=3), False),
    "schema_version true": (_set("schema_version", value=True), False),
    "schema_version 2.0": (_set("schema_version", value=2.0), False),
    "precision bf16 (a hint, not a stored graph)": (_set("precision", value="bf16"), False),
    "precision FP32": (_set("precision", value="FP32"), False),
    "family roberta": (_set("family", value="roberta"), False),
    "modernbert family with bert inputs": (_set("family", value="modernbert"), False),
    "bert without token_type_ids": (_drop_a_family_input, False),
    "unknown output": (_set("outputs", 0, "name", value="logits"), False),
    "output int64": (_set("outputs", 0, "dtype", value="int64"), False),
    "input float32": (_set("inputs", 0, "dtype", value="float32"), False),
    "input int32": (_set("inputs", 0, "dtype", value="int32"), True),
    "axis 0": (_set("inputs", 0, "shape", value=[0, "sequence"]), False),
    "axis 7": (_set("inputs", 0, "shape", value=[7, "sequence"]), True),
    "axis with a space": (_set("inputs", 0, "shape", value=["the batch"]), False),
    "five axes": (_set("inputs", 0, "shape", value=["a", "b", "c", "d", "e"]), False),
    "max_sequence_length 0": (_set("max_sequence_length", value=0), False),
    "max_sequence_length '128'": (_set("max_sequence_length", value="128"), False),
    "max_sequence_length over max positions": (_set("max_sequence_length", value=100_000), False),
    "max_sequence_length 2**64": (_set("max_sequence_length", value=2**64), False),
    "opset 6": (_set("opset", value=6), False),
    "opset null": (_set("opset", value=None), True),
    "graph.file absolute": (_set("graph", "file", value="/etc/passwd"), False),
    "graph.file with a newline": (_set("graph", "file", value="onnx/model.onnx\n"), False),
    "graph.file per precision (an object)": (_graph_file_object, False),
    "graph.file unlisted": (_unlisted_graph, False),
    "graph.nodes -1": (_set("graph", "nodes", value=-1), False),
    "graph.ops float": (_set("graph", "ops", value={"Attention": 1.5}), False),
    "two precisions share a file": (_shared_graph_file, False),
    "graphs by an unknown precision": (_set("graphs", "q4", value={"file": "x.onnx", "files": ["x.onnx"]}), False),
    "file path with ..": (_set("files", "../x", value={"sha256": "0" * 64, "bytes": 1}), False),
    "file path with a backslash": (_set("files", "a\\b", value={"sha256": "0" * 64, "bytes": 1}), False),
    "file path of 256 characters": (_set("files", "a" * 256, value={"sha256": "0" * 64, "bytes": 1}), False),
    "file path of 255 characters": (_set("files", "a" * 255, value={"sha256": "0" * 64, "bytes": 1}), True),
    "upper-case sha256": (_set("files", "vocab.txt", value={"sha256": "A" * 64, "bytes": 1}), False),
    "bytes 2**40 + 1": (_set("files", "vocab.txt", value={"sha256": "0" * 64, "bytes": 2**40 + 1}), False),
    "special token 10**7 + 1": (_set("special_tokens", "cls", value=10**7 + 1), False),
    "special token null": (_set("special_tokens", "cls", value=None), True),
    "unknown special token key (ignored)": (_set("special_tokens", "unk", value="anything"), True),
    "tokenizer file in a folder": (_set("tokenizer", "files", value=["sub/vocab.txt"]), False),
    "tokenizer kind sentencepiece": (_set("tokenizer", "kind", value="sentencepiece"), False),
    "tokenizer without files": (_drop("tokenizer", "files"), False),
    "golden version 2**40": (_set("golden", "version", value=2**40), False),
    "tensorrt.file listed": (_set("tensorrt", value={"file": "vocab.txt"}), False),
    "tensorrt.file beside": (_set("tensorrt", value={"file": "model.engine"}), True),
    "pooling without normalize": (_set("pooling", value={"mode": "mean"}), False),
    "labels on qa (optional)": (_set("labels", value={"num_labels": 2, "id2label": {"0": "a", "1": "b"}}), True),
    "labels with key 01": (_set("labels", value={"num_labels": 2, "id2label": {"0": "a", "01": "b"}}), False),
    "labels name of 257 characters": (_set("labels", value={"num_labels": 1, "id2label": {"0": "é" * 257}}), False),
    "labels name of 256 characters": (_set("labels", value={"num_labels": 1, "id2label": {"0": "é" * 256}}), True),
    "extra top-level key (ignored)": (_set("comment", value={"nested": [1, 2.5, None]}), True),
    "required_operators listed": (_set("graph", "required_operators", value={"file": "vocab.txt", "ops": _OPS}), True),
    "required_operators unlisted": (
        _set("graph", "required_operators", value={"file": "x.config", "ops": _OPS}),
        False,
    ),
    "required_operators without ops": (_set("graph", "required_operators", value={"file": "vocab.txt"}), False),
    "required_operators key without opset": (
        _set("graph", "required_operators", value={"file": "vocab.txt", "ops": {"ai.onnx": ["MatMul"]}}),
        False,
    ),
    "required_operators op with a space": (
        _set("graph", "required_operators", value={"file": "vocab.txt", "ops": {"ai.onnx;13": ["Mat Mul"]}}),
        False,
    ),
    "required_operators ops a list": (
        _set("graph", "required_operators", value={"file": "vocab.txt", "ops": []}),
        False,
    ),
}


@pytest.mark.parametrize("name", list(NAMED))
def test_named_mutation(cpp_reader: CppReader, valid_manifests: list[dict[str, Any]], name: str) -> None:
    edit, accepted = NAMED[name]
    manifest = copy.deepcopy(valid_manifests[0])
    edit(manifest)
    py, cc = verdicts(cpp_reader, manifest)
    assert (py == "ok", cc == "ok") == (accepted, accepted), f"python: {py}\nc++:    {cc}"


def test_seq_cls_needs_labels(cpp_reader: CppReader, valid_manifests: list[dict[str, Any]]) -> None:
    manifest = copy.deepcopy(valid_manifests[1])
    assert manifest["task"] == "seq-cls" and assert_agree(cpp_reader, manifest)
    manifest["labels"] = None
    assert not assert_agree(cpp_reader, manifest)


# --------------------------------------------------------------------------- generated mutations

NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    7,
    64,
    65,
    1.5,
    2.0,
    256,
    1 << 20,
    (1 << 20) + 1,
    100_000,
    100_001,
    10_000_000,
    10_000_001,
    1 << 24,
    (1 << 24) + 1,
    1 << 31,
    (1 << 31) + 1,
    1 << 40,
    (1 << 40) + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    "",
    "x",
    "0",
    "1",
    "fp32",
    "fp16",
    "int8",
    "bf16",
    "bert",
    "modernbert",
    "qa",
    "embed",
    "seq-cls",
    "int64",
    "int32",
    "float32",
    "float16",
    "wordpiece",
    "bpe",
    "mean",
    "logits",
    "input_ids",
    "token_type_ids",
    "batch",
    "vocab.txt",
    "golden.json",
    "onnx/model.onnx",
    "onnx/model_quantized.onnx",
    "../model.onnx",
    "/model.onnx",
    "onnx//model.onnx",
    "./model.onnx",
    "onnx\\model.onnx",
    "model.onnx\n",
    "mödel.onnx",
    "a b",
    "a" * 256,
    "0" * 64,
    [],
    {},
    [1],
    ["batch", "sequence"],
    ["vocab.txt"],
    {"file": "onnx/model.onnx", "files": ["onnx/model.onnx"]},
    {"sha256": "0" * 64, "bytes": 1},
    {"num_labels": 1, "id2label": {"0": "x"}},
]
value = st.sampled_from(NASTY) | st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
KNOWN_KEYS = sorted(
    {
        "graphs",
        "graph",
        "files",
        "file",
        "labels",
        "tensorrt",
        "golden",
        "tokenizer",
        "special_tokens",
        "pooling",
        "outputs",
        "inputs",
        "opset",
        "num_labels",
        "id2label",
        "mask",
        "cls",
        "kind",
        "nodes",
        "ops",
        "version",
        "examples",
        "shape",
        "dtype",
        "name",
        "bytes",
        "sha256",
        "local_attention",
        "max_position_embeddings",
        "config",
        "vocab_size",
        "fp16",
        "int8",
        "vocab.txt",
    }
)


# Records neither reader checks (docs/bundle.md: readers ignore keys they do not know).
IGNORED = {"parity", "optimization", "versions", "source", "export", "runtime", "use_external_data_format"}


def locations(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in the JSON tree: the path of each dict key / list index."""
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from locations(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from locations(v, (*at, i))


def _get(node: Any, at: tuple[Any, ...]) -> Any:
    for key in at:
        node = node[key]
    return node


@st.composite
def mutated(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    manifest = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(locations(manifest))
        if draw(st.integers(0, 9)):  # mostly where a reader looks: not inside the records both ignore
            places = [p for p in places if not IGNORED.intersection(p)]
        at = draw(st.sampled_from(places))
        target = _get(manifest, at)
        op = draw(st.sampled_from(["replace", "delete", "add", "rename", "duplicate", "version"]))
        if op == "version":
            manifest["schema_version"] = draw(st.sampled_from([1, 2, 3, 0, "2", None]))
        elif op == "replace" and at:
            _get(manifest, at[:-1])[at[-1]] = draw(value)
        elif op == "delete" and at:
            parent = _get(manifest, at[:-1])
            del parent[at[-1]]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=6))] = draw(value)
        elif op == "add" and isinstance(target, list):
            target.append(draw(value))
        elif op == "rename" and at and isinstance(_get(manifest, at[:-1]), dict):
            parent = _get(manifest, at[:-1])
            parent[draw(st.sampled_from(NASTY[29:66]) | st.sampled_from(KNOWN_KEYS))] = parent.pop(at[-1])
        elif op == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[draw(st.integers(0, len(target) - 1))]))
    return manifest


def test_python_and_cpp_readers_agree(cpp_reader: CppReader, valid_manifests: list[dict[str, Any]]) -> None:
    """The differential test: generated manifests, one verdict from each reader, the same."""
    seen = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(valid_manifests))
    @example(as_schema_1(valid_manifests[0]) | {"graphs": valid_manifests[0]["graphs"]})
    def agree(manifest: dict[str, Any]) -> None:
        seen["accepted" if assert_agree(cpp_reader, manifest) else "refused"] += 1

    agree()
    # Both verdicts were exercised (a generator that only breaks manifests would prove little).
    assert seen["accepted"] >= 10 and seen["refused"] >= EXAMPLES // 4, seen
