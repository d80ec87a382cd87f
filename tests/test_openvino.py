"""The OpenVINO target (``--runtime openvino``): IR beside the ONNX graph, listed and checksummed; the
OpenVINO runner against ONNX Runtime on real padded text; fp32 / bf16 / int8 gates; validate, run
and bench on it. Tiny BERT and ModernBERT (past its local window), and the packaged MiniLM for the
gates on real weights. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bert_export.bundle.reader import load_bundle
from bert_export.cli.main import main
from bert_export.models import BertExportError
from bert_export.quantize.pipeline import OptimizeOptions
from bert_export.runtimes.factory import bundle_tokenizer, make_runner

from .conftest import MINILM_ID, needs

HAVE_OV = importlib.util.find_spec("openvino") is not None
HAVE_NNCF = importlib.util.find_spec("nncf") is not None


@pytest.fixture(autouse=True)
def _openvino() -> None:
    needs(HAVE_OV and HAVE_NNCF, "openvino and nncf are not installed (pip install 'bert-export[openvino]')")


def manifest(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def padded_feed(bundle: Path, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Real text through the bundle's tokenizer; tiny ModernBERT has none (vocab 1024): random ids, the
    same padding pattern (one short row, one long row past the local window)."""
    b = load_bundle(bundle)
    tok = bundle_tokenizer(b)
    if tok is not None:
        enc = tok(texts, padding=True, truncation=True, max_length=b.max_seq, return_tensors="np")
        feed = {s.name: np.asarray(enc[s.name], np.int64) for s in b.inputs}
    else:
        ids = np.random.default_rng(0).integers(5, 1000, (2, 60))
        mask = np.ones_like(ids)
        mask[0, 7:] = 0
        feed = {"input_ids": ids, "attention_mask": mask}
    return feed, feed["attention_mask"].astype(bool)


TEXTS = [
    "Short one.",
    "A longer sentence about the museum that reopened after the renovation of its east wing, "
    "with enough words to pass a small local attention window many times over, and then some more words.",
]


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_fp32_ir_listed_and_agrees_with_ort(family: str, make_bundle: Any) -> None:
    bundle = make_bundle(family, "token-cls", optimization=OptimizeOptions(runtime="openvino"))
    m = manifest(bundle)
    ov = m["optimization"]["openvino"]
    assert ov["ir"] == "openvino/model.xml" and ov["weights"] == "openvino/model.bin"
    assert ov["device"] == "CPU" and ov["precision_hint"] == "f32" and ov["version"].startswith("20")
    for rel in (ov["ir"], ov["weights"]):
        assert len(m["files"][rel]["sha256"]) == 64 and m["files"][rel]["bytes"] > 0
    assert m["parity"]["runtime"] == "openvino" and m["parity"]["passed"]
    b = load_bundle(bundle)
    feed, keep = padded_feed(bundle, TEXTS)
    with make_runner(b, "ort") as ort_runner, make_runner(b, "openvino") as ov_runner:
        ref, got = ort_runner.infer(feed)["logits"], ov_runner.infer(feed)["logits"]
        assert ov_runner.provider_report()["inference_precision_hint"] == "f32"
    assert keep.sum() > 40 and np.abs(ref - got)[keep].max() < 1e-4  # unmasked positions only


def test_ir_tampering_is_refused(make_bundle: Any, copy_bundle: Any) -> None:
    bundle = copy_bundle(make_bundle("bert", "token-cls", optimization=OptimizeOptions(runtime="openvino")))
    data = bytearray((bundle / "openvino" / "model.bin").read_bytes())
    data[100] ^= 0xFF
    (bundle / "openvino" / "model.bin").write_bytes(bytes(data))
    with pytest.raises(BertExportError, match="model.bin"):
        make_runner(load_bundle(bundle), "openvino").activate()


def test_modernbert_int8_and_bf16_commands(make_bundle: Any, capsys: Any) -> None:
    """NNCF int8 and bf16 on ModernBERT past its window; validate / run / bench --runtime openvino."""
    for opt, precision in (
        (OptimizeOptions(runtime="openvino", int8=True), "int8"),
        (OptimizeOptions(runtime="openvino", bf16=True), "bf16"),
    ):
        bundle = make_bundle("modernbert", "embed", optimization=opt)
        m = manifest(bundle)
        assert m["precision"] == precision and m["optimization"]["openvino"]["precision"] == precision
        if precision == "bf16":
            assert m["optimization"]["openvino"]["precision_hint"] == "bf16"
        if precision == "int8":
            # the bf16 hint is tried where this CPU computes bf16, and kept only when the int8 gate holds with it
            import openvino

            from bert_export.quantize.openvino import cpu_has_bf16

            trial = m["optimization"]["openvino"]["int8"].get("bf16_hint_trial")
            assert (trial is not None) == cpu_has_bf16(openvino)
            assert m["optimization"]["openvino"]["precision_hint"] == ("bf16" if trial and trial["passed"] else "f32")
            ops = m["optimization"]["openvino"]["ops"]
            assert ops.get("FakeQuantize", 0) >= 6  # NNCF's int8 points in the IR
            assert m["optimization"]["openvino"]["int8"]["tool"].startswith("nncf")
            calibration = m["optimization"]["openvino"]["int8"]["calibration"]
            searched = not m["optimization"]["fallback"]["trials"][0]["passed"]  # NNCF's defaults failed the gate
            assert ("held_out_relative_error" in calibration) == searched, calibration
            assert calibration["chosen"] in calibration.get("held_out_relative_error", {"alpha 0.95, nncf ranges": 0})
        with pytest.raises(SystemExit) as exc:
            main(["validate", str(bundle), "--runtime", "openvino"])
        out = capsys.readouterr()
        assert exc.value.code in (0, None) and f"{precision} gate: PASS" in out.out + out.err
    bert = make_bundle("bert", "token-cls", optimization=OptimizeOptions(runtime="openvino"))  # has a tokenizer
    with pytest.raises(SystemExit) as exc:
        main(["run", str(bert), "--runtime", "openvino", "--json", "--text", TEXTS[1]])
    out = capsys.readouterr().out
    assert exc.value.code in (0, None) and json.loads(out.strip().splitlines()[-1])
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "bench",
                str(bundle),
                "--runtime",
                "openvino",
                "--batch",
                "1",
                "--seq",
                "24",
                "--runs",
                "3",
                "--warmup",
                "1",
            ]
        )
    assert exc.value.code in (0, None) and "openvino" in capsys.readouterr().out


def test_minilm_bf16_gate(make_bundle: Any) -> None:
    """Real weights, real text: bf16 (OpenVINO's default on this CPU class) passes its own gate, and the IR
    agrees with ONNX Runtime's fp32 within bf16's error once the f32 hint is forced."""
    bundle = make_bundle(
        "bert", "embed", model=MINILM_ID, max_seq=128, optimization=OptimizeOptions(runtime="openvino", bf16=True)
    )
    m = manifest(bundle)
    s = m["parity"]["summary"]
    assert m["parity"]["runtime"] == "openvino" and s["cosine_mean"] >= 0.9999 and s["cosine_min"] >= 0.999
    b = load_bundle(bundle)
    feed, keep = padded_feed(bundle, TEXTS)
    with make_runner(b, "ort") as ort_runner, make_runner(b, "openvino", precision_hint="f32") as ov_runner:
        ref, got = ort_runner.infer(feed)["last_hidden_state"], ov_runner.infer(feed)["last_hidden_state"]
    assert np.abs(ref - got)[keep].max() < 1e-4


def test_minilm_int8_gate_with_chosen_smoothing_keeps_few_matmuls_in_float(make_bundle: Any) -> None:
    """Real weights, real text: the SmoothQuant strength and ranges chosen on held-out calibration text
    let the gate pass with few MatMuls left in float (NNCF's defaults needed 20 of 37 on this model)."""
    int8 = manifest(
        make_bundle(
            "bert", "embed", model=MINILM_ID, max_seq=128, optimization=OptimizeOptions(runtime="openvino", int8=True)
        )
    )
    s, fb = int8["parity"]["summary"], int8["optimization"]["fallback"]
    assert s["cosine_mean"] >= 0.997 and s["cosine_min"] >= 0.995
    assert fb["passed"] and fb["seconds"] <= fb["budget_s"] + 300 and fb["candidates"] == 37  # 36 + the pooler
    assert fb["kept_fp32"] == int8["optimization"]["openvino"]["int8"]["ignored_scope"]
    assert len(fb["kept_fp32"]) <= 6  # 3 measured with the choice; 20 with NNCF's defaults
    assert 0 < fb["kept_cost_share"] <= 0.33  # of the MatMul work: 6 FFN matrices would be 24 of 73 units
    assert fb["before"]["summary"]["cosine_min"] < 0.995  # quantizing every MatMul still fails the gate here
    calibration = int8["optimization"]["openvino"]["int8"]["calibration"]
    errors = calibration["held_out_relative_error"]
    assert calibration["chosen"] == min(errors, key=errors.get) != "alpha 0.95, nncf ranges"  # not NNCF's default


def test_openvino_option_errors(tmp_path: Path, capsys: Any) -> None:
    for args, message in (
        (["--bf16"], "--runtime openvino"),
        (["--runtime", "openvino", "--fp16"], "--bf16"),
        (["--runtime", "openvino", "--int8", "--int8-mode", "static"], "NNCF"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["bert", "--task", "qa", "--random-init", "--tiny", "--out", str(tmp_path / "b"), *args])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and "Traceback" not in err
        assert not (tmp_path / "b").exists()


def test_missing_openvino_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bert_export.exporter import export

    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BertExportError, match=r"bert-export\[openvino\]"):
        export(
            "bert",
            "qa",
            random_init=True,
            overrides={
                "num_hidden_layers": 1,
                "hidden_size": 16,
                "num_attention_heads": 2,
                "intermediate_size": 32,
                "max_position_embeddings": 64,
            },
            out=tmp_path / "b",
            optimization=OptimizeOptions(runtime="openvino"),
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_static_shapes_runtime_agrees_and_keeps_few_compiled_shapes(family: str, make_bundle: Any) -> None:
    """``--runtime openvino-static``: one compiled copy per input shape, the same outputs as the dynamic model.

    ModernBERT's tiny window is 16 tokens and its length switch 64: 40 tokens run the dense branch, 100 the
    banded one, so both sides of the ``If`` that the static length resolves at compile time are checked.
    """
    from bert_export.runtimes import openvino_runner

    bundle = make_bundle(family, "token-cls", optimization=OptimizeOptions(runtime="openvino"))
    b = load_bundle(bundle)
    rng = np.random.default_rng(1)
    shapes = [(2, 40), (1, 100), (2, 40), (3, 12), (1, 7), (2, 33), (1, 100)]
    with make_runner(b, "openvino") as dynamic, make_runner(b, "openvino-static") as static:
        assert static.name == "openvino-static" and static.static_shapes == openvino_runner.STATIC_SHAPES
        for batch, seq in shapes:
            ids = rng.integers(5, 1000, (batch, seq))
            mask = np.ones_like(ids)
            mask[0, seq // 2 :] = 0  # a padded row
            feed = {
                s.name: {"input_ids": ids, "attention_mask": mask}.get(s.name, np.zeros_like(ids)) for s in b.inputs
            }
            want, got = dynamic.infer(feed)["logits"], static.infer(feed)["logits"]
            assert got.shape == want.shape and np.abs(got - want)[mask.astype(bool)].max() < 1e-4, (batch, seq)
            assert len(static.by_shape) <= openvino_runner.STATIC_SHAPES
        # the most recent shapes stay compiled; the oldest ones were dropped
        kept = [dict(key)["input_ids"] for key in static.by_shape]
        assert kept == [(3, 12), (1, 7), (2, 33), (1, 100)]

        def ifs(compiled: Any) -> int:
            ops = compiled.get_runtime_model().get_ordered_ops()
            return sum(op.get_rt_info()["layerType"].astype(str) == "If" for op in ops)

        # ModernBERT: the static length resolves each local layer's switch at compile time (why it is faster)
        local_layers = manifest(bundle)["optimization"]["banded_attention_layers"]
        assert ifs(dynamic.compiled) == local_layers and ifs(static.by_shape[next(reversed(static.by_shape))][0]) == 0
        assert local_layers == (2 if family == "modernbert" else 0)
