"""The OpenVINO target: an OpenVINO IR beside the ONNX graph (``openvino/model.xml`` + ``.bin``).

    ONNX (standard ops, fp32) -> ov.convert_model -> fp32 IR         (runs with the f32 hint)
                                                  -> same IR, hint bf16                 (``bf16``)
                                                  -> nncf.quantize -> int8 IR           (``int8``)

INT8 is NNCF's post-training quantization (transformer model type: MatMuls and their inputs
int8, softmax/LayerNorm/GELU left to OpenVINO) calibrated on our calibration text; when the IR
fails the int8 gate, our bounded fallback (quantize/fallback.py) picks MatMuls to leave in fp32,
and NNCF's ``IgnoredScope`` is the mechanism that keeps them out. Sensitivity is measured on the
OpenVINO models themselves: the fp32 and the quantized IR with each MatMul's input and output
exposed, so the ranking is what OpenVINO computes, not what ONNX Runtime would.

The bundle's ONNX graph stays the fp32 source of the IR (ONNX Runtime users can still run it);
the manifest's ``openvino`` section names the IR, OpenVINO's version, the device and the
precision hint the runner must set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.models.support import quiet_loggers
from bert_export.quantize.banded_attention import read_switch
from bert_export.quantize.fallback import FallbackResult, accuracy_fallback, local_errors
from bert_export.runtimes.openvino_runner import HINTS, INSTALL_HINT

IR_DIR = "openvino"  # the IR's folder in a bundle (``openvino-<precision>`` in a multi-precision one)
DEVICE = "CPU"


def require(int8: bool) -> tuple[Any, Any]:
    """``openvino`` (and ``nncf`` for int8), checked before any work starts."""
    try:
        import openvino as ov
    except ImportError:
        raise BertExportError(f"--runtime openvino needs the openvino package; {INSTALL_HINT}") from None
    if not int8:
        return ov, None
    try:
        import nncf
    except ImportError:
        raise BertExportError(f"--runtime openvino --int8 needs nncf; {INSTALL_HINT}") from None
    return ov, nncf


@dataclass
class IrResult:
    """What the OpenVINO step wrote, for the manifest."""

    precision: str
    hint: str
    version: str
    nncf_version: str | None = None
    fallback: FallbackResult | None = None
    ignored: list[str] = field(default_factory=list)
    ops: dict[str, int] = field(default_factory=dict)
    bf16_trial: dict[str, Any] | None = None  # int8: the gate with the bf16 hint (kept when it passes)
    path: Path | None = None  # the IR's model.xml, where it was written
    directory: str = IR_DIR  # its folder in the bundle

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ir": f"{self.directory}/model.xml",
            "weights": f"{self.directory}/model.bin",
            "version": self.version,
            "device": DEVICE,
            "precision": self.precision,
            "precision_hint": self.hint,
            "ops": self.ops,
        }
        if self.precision == "int8":
            out["int8"] = {
                "tool": f"nncf {self.nncf_version}",
                "model_type": "transformer",
                "preset": "nncf default (mixed)",
                "ignored_scope": self.ignored,
            }
            if self.bf16_trial is not None:
                out["int8"]["bf16_hint_trial"] = self.bf16_trial
        return out


def matmuls(model: Any) -> dict[str, tuple[str, str]]:
    """MatMuls with a constant weight: friendly name -> (activation input tensor, output tensor)."""
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        srcs = [op.input_value(i).get_node() for i in range(2)]
        if not any(
            s.get_type_name() in ("Constant", "Convert", "Multiply", "FakeQuantize") and _is_weight(s) for s in srcs[1:]
        ):
            continue
        x, y = op.input_value(0), op.output(0)
        if x.get_names() and y.get_names():
            out[op.get_friendly_name()] = (x.get_any_name(), y.get_any_name())
    return out


def _is_weight(node: Any) -> bool:
    """True when ``node`` is a constant or computed from constants only (decompression chains)."""
    seen = [node]
    while seen:
        n = seen.pop()
        if n.get_type_name() == "Parameter":
            return False
        if n.get_type_name() != "Constant":
            seen += [n.input_value(i).get_node() for i in range(n.get_input_size())]
    return True


def ov_local_errors(
    ov: Any, model: Any, candidates: dict[str, tuple[str, str]], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, float]:
    """Sensitivity from one fp32 OpenVINO run: each MatMul's own int8 error on its reference input
    (per-tensor activations, per-channel weights: what NNCF's transformer preset does)."""
    weights = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in candidates and op.input_value(1).get_node().get_type_name() == "Constant":
            w = np.array(op.input_value(1).get_node().get_data(), dtype=np.float32)
            if w.ndim == 2:
                weights[name] = w.T if op.get_transpose_b() else w
    runs = _run_exposed(ov, model, {candidates[n][0] for n in weights}, feeds)
    xs = {n: [r[candidates[n][0]] for r in runs] for n in weights}
    return local_errors(xs, weights, "tensor")


def _run_exposed(
    ov: Any, model: Any, tensors: set[str], feeds: Sequence[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    model = model.clone()
    model.add_outputs(sorted(tensors))
    compiled = ov.Core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    out = []
    for feed in feeds:
        res = request.infer(feed)
        out.append({n: np.array(res[port]) for port in compiled.outputs for n in port.get_names() if n in tensors})
    return out


def switch_feeds(onnx_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """One calibration feed just past the graph's local-attention length switch, else none.

    NNCF calibrates each ``If`` branch on the inputs that reach it; the blocked branch runs only past
    the switch (quantize/banded_attention.py), which the short calibration text never is, and NNCF
    refuses a branch with no sample. The feed is the calibration text's real tokens, concatenated."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    switch = read_switch({p.key: p.value for p in proto.metadata_props})
    if switch is None or not feeds:
        return []
    length = switch + 1
    rows = {k: np.concatenate([f[k][0] for f in feeds]) for k in feeds[0]}
    while len(next(iter(rows.values()))) < length:
        rows = {k: np.concatenate([v, v]) for k, v in rows.items()}
    return [{k: v[None, :length] for k, v in rows.items()}]


@quiet_loggers("nncf", "openvino", level=logging.ERROR, root=True)
def build_ir(
    onnx_path: Path,
    ir_dir: Path,
    precision: str,
    feeds: list[dict[str, np.ndarray]],
    probe: Callable[[Path], Any] | None,
    *,
    fallback: bool = True,
    seed: int = 0,
    budget_s: float = 240.0,
    bf16_probe: Callable[[Path], Any] | None = None,
) -> IrResult:
    """Convert ``onnx_path`` and write ``ir_dir/model.xml``/``.bin`` in ``precision`` (fp32|bf16|int8).

    INT8 with ``bf16_probe`` (the same gate, run with the bf16 hint): on a CPU that computes bf16, the
    parts NNCF leaves unquantized (attention, LayerNorm, GELU, the MatMuls kept by the fallback) run in
    bf16 when the int8 gate still holds that way, which is what OpenVINO does by default there. The
    hint is only tried where this CPU has bf16: elsewhere OpenVINO would silently compute f32, and the
    gate would prove nothing about the bf16 math a deployment CPU would do."""
    ov, nncf = require(precision == "int8")
    ir_dir.mkdir(parents=True, exist_ok=True)
    xml = ir_dir / "model.xml"
    model = ov.convert_model(str(onnx_path))
    result = IrResult(
        precision,
        HINTS[precision],
        ov.get_version().split("-")[0],
        getattr(nncf, "__version__", None) if nncf else None,
        path=xml,
        directory=ir_dir.name,
    )
    if precision != "int8":
        ov.save_model(model, str(xml), compress_to_fp16=False)
        result.ops = _ops(model)
        return result
    candidates = matmuls(model)
    feeds = feeds + switch_feeds(onnx_path, feeds)
    dataset = nncf.Dataset(feeds)

    def build(keep: frozenset[str]) -> Path:
        scope = nncf.IgnoredScope(names=sorted(keep), validate=False) if keep else None
        q = nncf.quantize(
            model.clone(), dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds), ignored_scope=scope
        )
        ov.save_model(q, str(xml), compress_to_fp16=False)
        return xml

    rank_feeds = feeds[:8]

    def rank(quantized: Path) -> dict[str, float]:
        return ov_local_errors(ov, model, candidates, rank_feeds)

    if probe is not None and fallback:
        result.fallback = accuracy_fallback(
            list(candidates), build, probe, None, rank_feeds, rank=rank, budget_s=budget_s
        )
        result.ignored = list(result.fallback.kept)
    else:
        build(frozenset())
    if bf16_probe is not None and cpu_has_bf16(ov) and (result.fallback is None or result.fallback.passed):
        report = bf16_probe(xml)
        result.bf16_trial = {
            "passed": bool(report.passed),
            "summary": {k: round(v, 6) for k, v in report.summary.items() if isinstance(v, float)},
        }
        if report.passed:
            result.hint = "bf16"
    result.ops = _ops(ov.Core().read_model(str(xml)))
    return result


def cpu_has_bf16(ov: Any) -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 here (AVX512-BF16 or AMX)."""
    try:
        return "BF16" in ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an old plugin without the property: assume not
        return False


def _ops(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        counts[op.get_type_name()] = counts.get(op.get_type_name(), 0) + 1
    return dict(sorted(counts.items()))
