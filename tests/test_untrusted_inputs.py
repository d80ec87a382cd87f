"""Issue 24, input side: every input a command reads is untrusted, and says what is wrong in one line.

Each class has tests that failed before its fix:

- external data through any tensor of a graph (sparse initializers, sparse attributes, subgraphs;
  schema 1 too) must be one of the graph's listed files;
- a model directory (config.json, modules.json, 1_Pooling/config.json, tokenizer configs) is read
  with the manifest's strict, bounded JSON reader, its paths stay inside it and its sizes are
  checked like random-init ones;
- ``--threads`` is 1..cores for every command and the Python API;
- ``--data`` is streamed with per-line / total / column limits, without pandas but for parquet;
  deep JSON anywhere (jsonl rows, CSV cells, ``--expect-ops``) is one line;
- ``bench`` estimates a cell's memory before allocating it;
- errors from C++ libraries quote the cause, not the source location in front of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bert_export.bundle.reader import MANIFEST
from bert_export.models import BertExportError

from .conftest import resign
from .test_bad_input import assert_one_error_line, run_cli
from .test_layout import as_schema_1

# --- external data through every kind of tensor --------------------------------------------------------

STOLEN = np.arange(4, dtype=np.float32) + 1000.0  # what the unlisted file holds


def _external(name: str, dtype: int, location: str, nbytes: int, dims: list[int]) -> TensorProto:
    tensor = TensorProto(name=name, data_type=dtype, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _sparse(location: str, external: str) -> onnx.SparseTensorProto:
    """A 4-value sparse tensor whose values (or indices) live in ``location``."""
    values = (
        _external("bx_stolen", TensorProto.FLOAT, location, 16, [4])
        if external == "values"
        else numpy_helper.from_array(np.ones(4, np.float32), "bx_stolen")
    )
    indices = (
        _external("bx_stolen_idx", TensorProto.INT64, location, 32, [4])
        if external == "indices"
        else numpy_helper.from_array(np.arange(4, dtype=np.int64), "bx_stolen_idx")
    )
    return helper.make_sparse_tensor(values, indices, [4])


def _subgraph(**fields: object) -> onnx.GraphProto:
    out = helper.make_tensor_value_info("bx_out", TensorProto.FLOAT, [4])
    return helper.make_graph([helper.make_node("Identity", ["bx_stolen"], ["bx_out"])], "branch", [], [out], **fields)


PLACEMENTS: dict[str, Callable[[onnx.ModelProto, str], None]] = {
    "sparse-initializer-values": lambda m, loc: m.graph.sparse_initializer.append(_sparse(loc, "values")),
    "sparse-initializer-indices": lambda m, loc: m.graph.sparse_initializer.append(_sparse(loc, "indices")),
    "sparse-attribute": lambda m, loc: m.graph.node.append(
        helper.make_node("Constant", [], ["bx_c"], sparse_value=_sparse(loc, "values"))
    ),
    "sparse-in-if-branch": lambda m, loc: m.graph.node.append(
        helper.make_node(
            "If",
            ["bx_cond"],
            ["bx_if"],
            then_branch=_subgraph(sparse_initializer=[_sparse(loc, "values")]),
            else_branch=_subgraph(),
        )
    ),
    "dense-in-nested-loop": lambda m, loc: m.graph.node.append(
        helper.make_node(
            "Loop",
            ["", "bx_cond"],
            ["bx_loop"],
            body=helper.make_graph(
                [
                    helper.make_node(
                        "If",
                        ["bx_cond"],
                        ["bx_x"],
                        then_branch=_subgraph(initializer=[_external("bx_stolen", 1, loc, 16, [4])]),
                        else_branch=_subgraph(),
                    )
                ],
                "body",
                [],
                [],
            ),
        )
    ),
}


def _plant(bundle: Path, graph: str, placement: str) -> None:
    """Write an unlisted file beside ``graph`` and make one tensor of the graph read it; re-sign."""
    path = bundle / graph
    model = onnx.load(str(path))
    PLACEMENTS[placement](model, "stolen.bin")
    onnx.save(model, str(path))
    version = json.loads((bundle / MANIFEST).read_text())["schema_version"]
    manifest = resign(bundle)
    (bundle / MANIFEST).write_text(json.dumps({**manifest, "schema_version": version}))  # resign writes the newest
    (path.parent / "stolen.bin").write_bytes(STOLEN.tobytes() + np.arange(4, dtype=np.int64).tobytes())  # unlisted


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_external_data_of_every_tensor_kind_is_checked(capsys, make_bundle, copy_bundle, placement: str) -> None:
    bundle = copy_bundle(make_bundle("bert", "seq-cls"))
    _plant(bundle, "onnx/model.onnx", placement)
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err, "refers to external data 'stolen.bin'", "not one of its listed graph files")
    code, err = run_cli(capsys, "run", str(bundle), "--text", "Paris is lovely.", "--json")
    assert_one_error_line(code, err, "refers to external data 'stolen.bin'")


@pytest.mark.parametrize("placement", ["sparse-initializer-values", "sparse-in-if-branch"])
def test_external_data_is_checked_in_schema_1_bundles(capsys, make_bundle, copy_bundle, placement: str) -> None:
    bundle = copy_bundle(make_bundle("bert", "seq-cls"))
    as_schema_1(bundle)
    _plant(bundle, "model.onnx", placement)
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert_one_error_line(code, err, "refers to external data 'stolen.bin'")


def test_listed_external_data_still_loads(capsys, make_bundle, copy_bundle, tmp_path: Path) -> None:
    """The check refuses only what is unlisted: a graph saved with its weights as external data runs."""
    bundle = copy_bundle(make_bundle("bert", "seq-cls"))
    model = onnx.load(str(bundle / "onnx/model.onnx"))
    onnx.save(model, str(bundle / "onnx/model.onnx"), save_as_external_data=True, location="model.onnx_data")

    def edit(manifest: dict) -> None:
        for record in (manifest["graph"], *manifest["graphs"].values()):
            record["files"] = ["onnx/model.onnx", "onnx/model.onnx_data"]

    resign(bundle, edit)
    code, err = run_cli(capsys, "validate", str(bundle), "-q")
    assert code == 0, err


# --- --threads: 1..cores everywhere --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "100000", str((os.cpu_count() or 1) + 1), "two"])
@pytest.mark.parametrize("command", ["run", "validate", "compare", "bench", "serve"])
def test_threads_out_of_range_is_refused_by_every_command(capsys, make_bundle, command: str, value: str) -> None:
    bundle = str(make_bundle("bert", "seq-cls"))
    argv = {
        "run": ["run", bundle, "--text", "hello"],
        "validate": ["validate", bundle, "-q"],
        "compare": ["compare", bundle, bundle, "-q"],
        "bench": ["bench", bundle, "-q", "--no-torch"],
        "serve": ["serve", bundle],
    }[command]
    code, err = run_cli(capsys, *argv, "--threads", value)
    assert_one_error_line(code, err, "--threads", f"1 and {os.cpu_count()}" if value != "two" else "whole number")


def test_threads_are_checked_by_the_python_api(make_bundle) -> None:
    from bert_export.bundle.reader import load_bundle
    from bert_export.exporter.api import validate
    from bert_export.runtimes.bench import bench
    from bert_export.runtimes.factory import make_runner

    bundle = make_bundle("bert", "seq-cls")
    for threads in (0, -5, 100_000):
        with pytest.raises(BertExportError, match=r"--threads .* out of range: pass 1 to"):
            make_runner(load_bundle(bundle), "ort", threads)
        with pytest.raises(BertExportError, match="out of range"):
            validate(bundle, threads=threads)
        with pytest.raises(BertExportError, match="out of range"):
            bench(bundle, threads=threads, with_torch=False)
    with make_runner(load_bundle(bundle), "ort", os.cpu_count()) as runner:
        assert runner is not None


# --- errors quote the cause, not the C++ source location --------------------------------------------------


def test_onnxruntime_error_keeps_its_cause(tmp_path: Path) -> None:
    """ORT puts ``graph.cc:1407 onnxruntime::Graph::Graph(<300 characters>)`` before the cause."""
    import onnxruntime as ort

    from bert_export.models.support import first_line

    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "w"), numpy_helper.from_array(np.array([5]), "i"), [2]
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], sparse_initializer=[sparse])
    onnx.save(helper.make_model(graph), str(tmp_path / "bad.onnx"))
    with pytest.raises(Exception) as caught:
        ort.InferenceSession(str(tmp_path / "bad.onnx"), providers=["CPUExecutionProvider"])
    assert "graph.cc" in str(caught.value)  # the library's own message starts with the location
    line = first_line(caught.value)
    assert "index is out of bounds" in line and "graph.cc" not in line and "onnxruntime::" not in line, line
    assert line.startswith("Load model from"), line


def test_openvino_error_keeps_its_cause(tmp_path: Path) -> None:
    """OpenVINO's first line is ``Exception from src/inference/src/cpp/core.cpp:84:``, the cause comes later."""
    openvino = pytest.importorskip("openvino")
    from bert_export.models.support import first_line

    (tmp_path / "garbage.onnx").write_bytes(b"not a graph")
    with pytest.raises(Exception) as caught:
        openvino.Core().read_model(str(tmp_path / "garbage.onnx"))
    assert str(caught.value).startswith("Exception from ")
    line = first_line(caught.value)
    assert "Unable to read the model" in line and "core.cpp" not in line, line


@pytest.mark.parametrize(
    "message, cause",
    [
        (
            "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
            "Name:'/m' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
            "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
            "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 12884901888\n",
            "Status Message: Failed to allocate memory for requested buffer of size 12884901888",
        ),
        (
            "Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'false' failed at "
            'src/frontends/common/src/frontend.cpp:47:\nLoading input model\nInput tensor isn\'t found for node "w"\n',
            'Loading input model: Input tensor isn\'t found for node "w"',
        ),
        ("first line\nsecond line", "first line"),
        ("", "RuntimeError"),
    ],
)
def test_first_line_drops_source_locations(message: str, cause: str) -> None:
    from bert_export.models.support import first_line

    assert cause in first_line(RuntimeError(message))
