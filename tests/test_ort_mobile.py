"""``--runtime ort-mobile`` (issue #21): the graph in ONNX Runtime's ORT format with the operator config a
reduced-size build takes, gated on the ``.ort`` file; run/validate/bench and the C++ demo load it.

Bundles: the packaged MiniLM (embed, fp32; exported once per session) and a tiny random-init BERT with
fp32, fp16 and int8 graphs. Forged ``.ort`` files are in tests/test_bundle_trust.py
(``test_forged_graph_file_is_one_line``), beside the same forgeries of an ONNX graph.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.quantize.target_ort_mobile import parse_config
from bert_export.runtimes.factory import make_runner
from bert_export.runtimes.texts import SENTENCES
from tests.test_bad_input import assert_one_error_line
from tests.test_cpp import cpp, demo  # noqa: F401  (the x86-64 demo, built once per session)
from tests.test_edge import arm_demo, run_arm  # noqa: F401  (the aarch64 demo under qemu)

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MOBILE = OptimizeOptions(runtime="ort-mobile")


@pytest.fixture(scope="module")
def minilm(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "embed", model=MINILM_ID, max_seq=128, optimization=MOBILE)


@pytest.fixture(scope="module")
def tiny_all(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle("bert", "seq-cls", optimization=MOBILE, precisions="fp32,fp16,int8")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_the_bundle_ships_an_ort_graph_and_its_operator_config(minilm: Path) -> None:
    manifest = json.loads((minilm / "manifest.json").read_text())
    graph = manifest["graph"]
    assert manifest["runtime"] == "ort-mobile"
    assert graph["file"] == "onnx/model.ort" and graph["files"] == ["onnx/model.ort"]
    assert (minilm / "onnx/model.ort").read_bytes()[4:8] == b"ORTM"  # ONNX Runtime's flatbuffer identifier
    assert not list(minilm.rglob("*.onnx"))  # what the app ships: no ONNX graph beside it
    required = graph["required_operators"]
    assert required["file"] in manifest["files"]
    config = (minilm / required["file"]).read_text()
    assert parse_config(config) == required["ops"]
    assert "/tmp" not in config  # no path of the exporting machine
    # ONNX Runtime's fused ops (contrib kernels a reduced build keeps from the config), at opset 1
    assert "Attention" in required["ops"]["com.microsoft;1"]
    assert any("LayerNormalization" in ops for key, ops in required["ops"].items() if key.startswith("ai.onnx;"))
    # the config is what ONNX Runtime's own tools would extract from the .ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    redo = minilm.parent / "redo.config"
    create_config_from_models([minilm / "onnx/model.ort"], redo, False)
    assert parse_config(redo.read_text()) == required["ops"]
    assert graph["ort_format"]["optimization_level"] == "basic"
    parity = manifest["graphs"]["fp32"]["parity"]
    assert parity["passed"] and parity["runtime"] == "ort-mobile"


def test_validate_and_run_on_the_ort_graph(capsys: pytest.CaptureFixture[str], minilm: Path) -> None:
    code, out, err = cli(capsys, "validate", str(minilm), "--runtime", "ort-mobile", "-q")
    assert code == 0, err
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    argv = ["run", str(minilm), "--runtime", "ort-mobile", "--json", *(a for t in texts for a in ("--text", t))]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    vectors = np.array(json.loads(out)["embeddings"], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.3  # the two guitar sentences are near, the market one is not


def test_the_ort_graph_answers_as_the_onnx_one(make_bundle: Callable[..., Path], minilm: Path) -> None:
    """The same padded mixed-length batch through the .ort (ort-mobile) and the ort target's .onnx."""
    onnx_bundle = load_bundle(make_bundle("bert", "embed", model=MINILM_ID, max_seq=128))
    mobile = load_bundle(minilm)
    from bert_export.runtimes.factory import bundle_tokenizer

    enc = bundle_tokenizer(mobile)(list(SENTENCES[:4]), padding=True, return_tensors="np")
    feed = {s.name: enc[s.name].astype(np.int64) for s in mobile.inputs}
    assert (feed["attention_mask"] == 0).any()  # mixed lengths: padding in the batch
    with make_runner(mobile, "ort-mobile") as a, make_runner(onnx_bundle, "ort") as b:
        got, want = a.infer(feed), b.infer(feed)
    mask = feed["attention_mask"].astype(bool)
    np.testing.assert_allclose(got["last_hidden_state"][mask], want["last_hidden_state"][mask], atol=2e-4)


def test_fp16_and_int8_ort_graphs_pass_their_gates(tiny_all: Path) -> None:
    manifest = json.loads((tiny_all / "manifest.json").read_text())
    for precision, name in (("fp32", "model"), ("fp16", "model_fp16"), ("int8", "model_quantized")):
        record = manifest["graphs"][precision]
        assert record["file"] == f"onnx/{name}.ort"
        assert record["parity"]["passed"] and record["parity"]["runtime"] == "ort-mobile"
        assert record["required_operators"]["file"] == f"onnx/{name}.required_operators.config"
        session = ort.InferenceSession(str(tiny_all / record["file"]), providers=["CPUExecutionProvider"])
        assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask", "token_type_ids"}
    int8_ops = {op for ops in manifest["graphs"]["int8"]["required_operators"]["ops"].values() for op in ops}
    assert int8_ops & {"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QuantizeLinear", "DynamicQuantizeLinear"}
    for precision in ("fp16", "int8"):  # each precision's graph runs under its own name
        with make_runner(load_bundle(tiny_all, precision=precision), "ort-mobile") as runner:
            out = runner.infer(
                {
                    "input_ids": np.array([[101, 2023, 102]]),
                    "attention_mask": np.ones((1, 3), np.int64),
                    "token_type_ids": np.zeros((1, 3), np.int64),
                }
            )
        assert np.isfinite(out["logits"]).all()


def test_ort_mobile_refuses_an_onnx_bundle(
    capsys: pytest.CaptureFixture[str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle("bert", "seq-cls")
    code, _, err = cli(capsys, "run", str(bundle), "--runtime", "ort-mobile", "--text", "hello")
    assert_one_error_line(code, err, "is not ORT format", "--runtime ort")


def test_bf16_is_refused_with_the_reason(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(
        capsys, "bert", "--task", "embed", "--random-init", "--runtime", "ort-mobile", "--bf16", "--out",
        str(tmp_path / "b"),
    )  # fmt: skip
    assert_one_error_line(code, err, "--runtime ort-mobile has no --bf16")
    assert not (tmp_path / "b").exists()


def test_cpp_demo_self_test_on_the_ort_bundle(demo: Path, minilm: Path) -> None:  # noqa: F811
    proc = cpp(demo, minilm, "--self-test")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    n = len(json.loads((minilm / "golden.json").read_text())["examples"])
    assert f"self-test: {n}/{n} golden examples within the fp32 tolerances" in proc.stdout


@pytest.mark.slow
def test_arm64_self_test_on_the_ort_bundle(arm_demo: tuple[str, Path], minilm: Path) -> None:  # noqa: F811
    """The same .ort on ONNX Runtime's aarch64 kernels, under qemu (tests/test_edge.py's cross-built demo)."""
    proc = run_arm(arm_demo, minilm, "--self-test")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    n = len(json.loads((minilm / "golden.json").read_text())["examples"])
    assert f"self-test: {n}/{n} golden examples within the fp32 tolerances" in proc.stdout
