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
import shutil
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


# --- model directories are untrusted input -----------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path: Path, minilm_dir: Path) -> Path:
    """A private copy of the packaged MiniLM (the weights hard-linked: no test writes them)."""
    dst = tmp_path / "model"
    shutil.copytree(minilm_dir, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    os.link(minilm_dir / "model.safetensors", dst / "model.safetensors")
    return dst


def _set_config(model: Path, **values: object) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(values)
    (model / "config.json").unlink()
    (model / "config.json").write_text(json.dumps(config))


def _replace(path: Path, make: Callable[[Path], None]) -> None:
    """Replace ``path`` (unlinked first: a hard link must not change the shared original)."""
    path.unlink()
    make(path)


def _export(capsys, model: Path, out: Path, task: str = "embed", *extra: str) -> tuple[int, str]:
    return run_cli(capsys, "bert", "--task", task, "--model", str(model), "--out", str(out), "-q", *extra)


def _deep(n: int) -> str:
    return '{"model_type": "bert", "x": ' + "[" * n + "]" * n + "}"


CONFIG_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "list": (lambda p: p.write_text('["bert"]'), "is not a JSON object"),
    "string": (lambda p: p.write_text('"bert"'), "is not a JSON object"),
    "directory": (lambda p: p.mkdir(), "not a regular file"),
    "deeply-nested": (lambda p: p.write_text(_deep(100_000)), "nested"),
    "nested-65": (lambda p: p.write_text(_deep(70)), "nested more than 64 levels"),
    "nan-dropout": (lambda p: p.write_text('{"model_type": "bert", "hidden_dropout_prob": NaN}'), "NaN"),
    "duplicate-key": (lambda p: p.write_text('{"model_type": "bert", "model_type": "bert"}'), "duplicate key"),
    "dev-zero": (lambda p: p.symlink_to("/dev/zero"), "outside the model directory"),
    "link-outside": (lambda p: p.symlink_to(p.parent.parent / "outside.json"), "outside the model directory"),
    "not-utf8": (lambda p: p.write_bytes(b'{"model_type": "b\xffrt"}'), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_hostile_config_json_is_one_line(capsys, model_dir: Path, tmp_path: Path, case: str) -> None:
    make, needle = CONFIG_CASES[case]
    (tmp_path / "outside.json").write_text((model_dir / "config.json").read_text())
    _replace(model_dir / "config.json", make)
    code, err = _export(capsys, model_dir, tmp_path / "out")
    assert_one_error_line(code, err, "config.json", needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["config.json", "modules.json", "1_Pooling/config.json", "tokenizer_config.json"])
def test_fifo_in_a_model_directory_does_not_hang(model_dir: Path, tmp_path: Path, name: str) -> None:
    import subprocess
    import sys

    (model_dir / name).unlink()
    os.mkfifo(model_dir / name)
    argv = ["bert", "--task", "embed", "--model", str(model_dir), "--out", str(tmp_path / "out"), "-q"]
    code = "import sys; from bert_export.cli.main import main; main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert_one_error_line(proc.returncode, proc.stderr, name, "not a regular file")


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"num_labels": 1e9}, "num_labels=1000000000.0 makes no model"),
        ({"num_labels": 10**9}, "labels is more than 100000"),
        ({"num_labels": 200_000}, "labels is more than 100000"),
        ({"num_hidden_layers": -1}, "num_hidden_layers=-1 makes no model"),
        ({"num_hidden_layers": 2000}, "num_hidden_layers=2000 is beyond what a bundle can hold"),
        ({"hidden_size": 0}, "hidden_size=0 makes no model"),
        ({"vocab_size": "30522"}, "vocab_size='30522' makes no model"),
        ({"max_position_embeddings": 1 << 21}, "max_position_embeddings=2097152 is beyond what a bundle can hold"),
    ],
)
def test_model_config_sizes_are_checked_like_random_init(
    capsys, model_dir: Path, tmp_path: Path, values: dict, needle: str
) -> None:
    _set_config(model_dir, **values)
    code, err = _export(capsys, model_dir, tmp_path / "out", "seq-cls")
    assert_one_error_line(code, err, f"{model_dir / 'config.json'}: ", needle)
    assert not (tmp_path / "out").exists()


def test_modules_json_paths_stay_inside_the_model_directory(capsys, model_dir: Path, tmp_path: Path) -> None:
    """A ``../..`` path in modules.json used to be read, and its pooling config used (max instead of mean)."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    modules = json.loads((model_dir / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith("Pooling"):
            module["path"] = "../elsewhere"
    _replace(model_dir / "modules.json", lambda p: p.write_text(json.dumps(modules)))
    code, err = _export(capsys, model_dir, tmp_path / "out")
    assert_one_error_line(code, err, "'../elsewhere/config.json'", "not a plain path inside the model directory")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, needle",
    [
        ('{"not": "a list"}', "is not a JSON list"),
        ('[{"path": "1_Pooling"}]', 'must list objects with a "type"'),
        ('[{"type": "sentence_transformers.models.Pooling"}]', "the Pooling module has no path"),
    ],
)
def test_broken_modules_json_is_one_line(capsys, model_dir: Path, tmp_path: Path, content: str, needle: str) -> None:
    """It used to fall back to CLS pooling without a word: embeddings unlike the model's own."""
    _replace(model_dir / "modules.json", lambda p: p.write_text(content))
    code, err = _export(capsys, model_dir, tmp_path / "out")
    assert_one_error_line(code, err, "modules.json", needle)


def test_weights_with_more_layers_than_the_config_are_refused(capsys, model_dir: Path, tmp_path: Path) -> None:
    _set_config(model_dir, num_hidden_layers=3)
    code, err = _export(capsys, model_dir, tmp_path / "out")
    assert_one_error_line(code, err, "hold 6 encoder layers", "num_hidden_layers=3", "encoder.layer.3.")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["tokenizer.json", "added_tokens.json"])
def test_tokenizer_id_beyond_the_vocabulary_is_refused(capsys, model_dir: Path, tmp_path: Path, where: str) -> None:
    if where == "tokenizer.json":
        tok = json.loads((model_dir / "tokenizer.json").read_text())
        tok["added_tokens"].append(
            {
                "id": 10**9,
                "content": "[BIG]",
                "special": True,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
            }
        )
        _replace(model_dir / "tokenizer.json", lambda p: p.write_text(json.dumps(tok)))
    else:
        (model_dir / "added_tokens.json").write_text(json.dumps({"[BIG]": 10**9}))
    code, err = _export(capsys, model_dir, tmp_path / "out")
    assert_one_error_line(code, err, where, "'[BIG]' the id 1000000000", "ids 0..30521")
    assert not (tmp_path / "out").exists()


# --- --data: streamed, bounded, every failure one line --------------------------------------------------------


def _compare_data(capsys, bundle: Path, data: Path, *extra: str) -> tuple[int, str]:
    return run_cli(capsys, "compare", str(bundle), str(bundle), "--data", str(data), "-q", *extra)


DEEP = "[" * 100_000 + "]" * 100_000

DATA_CASES: dict[str, tuple[str, str, bytes, str]] = {
    # name: (task, file name, content, needle)
    "long-line": ("seq-cls", "d.txt", b"short line\n" + b"x" * (2 << 20) + b"\n", "line 2 is longer than 1 MiB"),
    "many-columns": ("seq-cls", "d.csv", (",".join(f"c{i}" for i in range(300)) + "\n").encode(), "300 columns"),
    "deep-jsonl": ("seq-cls", "d.jsonl", b'{"text": "a", "x": ' + DEEP.encode() + b"}\n", "nested too deeply"),
    "deep-csv-cell": ("token-cls", "d.csv", b"text,labels\nhello world," + DEEP.encode() + b"\n", "nested too deeply"),
    "jsonl-not-object": ("seq-cls", "d.jsonl", b'{"text": "a"}\n[1, 2]\n', "line 2 holds a list"),
    "csv-extra-cells": ("seq-cls", "d.csv", b"text\nhello,world\n", "row 1 has 2 cells for 1 columns"),
    "bad-utf8-late": ("seq-cls", "d.txt", b"fine\n" * 3 + b"caf\xe9\n", "bad byte at offset 18"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_hostile_data_files_are_one_line(capsys, make_bundle, tmp_path: Path, case: str) -> None:
    task, name, content, needle = DATA_CASES[case]
    (tmp_path / name).write_bytes(content)
    code, err = _compare_data(capsys, make_bundle("bert", task), tmp_path / name)
    assert_one_error_line(code, err, "--data", needle)


def test_data_total_size_is_bounded_and_limit_reads_no_further(
    capsys, make_bundle, tmp_path: Path, monkeypatch
) -> None:
    from bert_export.evaluation import data

    monkeypatch.setattr(data, "MAX_DATA_BYTES", 4096)
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"text": f"sentence number {i} is fine."}) + "\n" for i in range(1000)))
    bundle = make_bundle("bert", "seq-cls")
    code, err = _compare_data(capsys, bundle, path)
    assert_one_error_line(code, err, "is larger than", "--limit")
    code, err = _compare_data(capsys, bundle, path, "--limit", "5")  # the first rows only: never reads the rest
    assert code == 0, err
    assert [e.text for e in data.read_data(path, "seq-cls", limit=2).examples] == [
        "sentence number 0 is fine.",
        "sentence number 1 is fine.",
    ]


def test_parquet_label_column_of_lists_is_one_line(capsys, make_bundle, tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["good", "bad"], "label": [[1, 0], [0, 1]]}), path)
    code, err = _compare_data(capsys, make_bundle("bert", "seq-cls"), path)
    assert_one_error_line(code, err, "row 1: label must be one label name or id, got list")


def test_text_formats_read_without_pandas(make_bundle, tmp_path: Path) -> None:
    """Issue 20: .jsonl/.csv/.txt need only the standard library (pandas and pyarrow blocked here)."""
    import subprocess
    import sys

    (tmp_path / "d.jsonl").write_text(
        '{"text": "Paris is lovely.", "label": "LABEL_1"}\n{"text": "Rain.", "label": 0}\n'
    )
    (tmp_path / "d.csv").write_text('text,label\n"Paris, in spring",LABEL_0\n"He said ""hi""",1\n')
    (tmp_path / "d.txt").write_text("\ufeffFirst line.\n\n  \nSecond line.\r\n")
    script = (
        "import sys, json\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('pandas', 'pyarrow'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from bert_export.evaluation.data import read_data\n"
        "out = {}\n"
        "for name in ('d.jsonl', 'd.csv', 'd.txt'):\n"
        "    ds = read_data(sys.argv[1] + '/' + name, 'embed')\n"
        "    out[name] = [ds.columns, [e.text for e in ds.examples]]\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == {
        "d.jsonl": [["text", "label"], ["Paris is lovely.", "Rain."]],
        "d.csv": [["text", "label"], ["Paris, in spring", 'He said "hi"']],
        "d.txt": [["text"], ["First line.", "Second line."]],
    }


def test_expect_ops_deep_json_is_one_line(capsys, make_bundle, tmp_path: Path) -> None:
    path = tmp_path / "ops.json"
    path.write_text('{"Attention": ' + DEEP + "}")
    code, err = run_cli(capsys, "validate", str(make_bundle("bert", "seq-cls")), "--expect-ops", str(path), "-q")
    assert_one_error_line(code, err, "--expect-ops", "nested")


# --- bench: sizes estimated before allocation --------------------------------------------------------------------


def test_bench_refuses_cells_that_cannot_fit_before_allocating(capsys, make_bundle) -> None:
    import psutil

    from bert_export.bundle.reader import load_bundle
    from bert_export.runtimes.bench import bundle_config, working_bytes

    bundle = make_bundle("bert", "seq-cls")
    b = load_bundle(bundle)
    config, seq = bundle_config(b), b.max_seq
    batch = 1
    while working_bytes(config, "seq-cls", batch, seq) <= 2 * psutil.virtual_memory().total:
        batch *= 2
    before = psutil.Process().memory_info().rss
    code, err = run_cli(capsys, "bench", str(bundle), "--batch", f"1,{batch}", "--seq", str(seq), "--no-torch", "-q")
    assert_one_error_line(code, err, f"--batch {batch} --seq {seq} needs at least", "GiB", "smaller --batch")
    assert psutil.Process().memory_info().rss - before < 1 << 30  # refused before the feeds were built
