"""The OpenVINO target: an OpenVINO IR beside the ONNX graph (``openvino/model.xml`` + ``.bin``).

    ONNX (standard ops, fp32) -> ov.convert_model -> fp32 IR         (runs with the f32 hint)
                                                  -> same IR, hint bf16                 (``bf16``)
                                                  -> nncf.quantize -> int8 IR           (``int8``)

INT8 is NNCF's post-training quantization (transformer model type: MatMuls and their inputs
int8, softmax/LayerNorm/GELU left to OpenVINO) calibrated on our calibration text. When NNCF's
defaults fail the int8 gate, SmoothQuant's strength and the activation ranges are chosen for the
model on held-out calibration text (``choose_calibration``); when the IR still fails, our bounded
fallback (quantize/fallback.py) picks MatMuls to leave in fp32, and NNCF's ``IgnoredScope`` is the
mechanism that keeps them out. Sensitivity is measured on the OpenVINO fp32 IR itself (each
MatMul's input exposed, its int8 product simulated after the chosen smoothing), so the ranking is
of what OpenVINO computes, not what ONNX Runtime would.

The bundle's ONNX graph stays the fp32 source of the IR (ONNX Runtime users can still run it);
the manifest's ``openvino`` section names the IR, OpenVINO's version, the device and the
precision hint the runner must set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.models.support import quiet_loggers
from bert_export.quantize.banded_attention import read_switch
from bert_export.quantize.fallback import FallbackResult, accuracy_fallback, local_errors, smooth_scale
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
    calibration: dict[str, Any] | None = None  # int8: the NNCF settings chosen on held-out text, and why
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
            if self.calibration is not None:
                out["int8"]["calibration"] = self.calibration
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


def _weights(model: Any, candidates: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Each candidate MatMul's constant 2-D weight as [K, N]."""
    weights = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in candidates and op.input_value(1).get_node().get_type_name() == "Constant":
            w = np.array(op.input_value(1).get_node().get_data(), dtype=np.float32)
            if w.ndim == 2:
                weights[name] = w.T if op.get_transpose_b() else w
    return weights


def ov_matmul_costs(model: Any, candidates: Mapping[str, Any]) -> dict[str, float]:
    """Multiply-adds per token of each candidate MatMul (K x N of its weight): the fallback's cost."""
    costs = {}
    for op in model.get_ordered_ops():
        if op.get_friendly_name() in candidates:
            shape = op.input_value(1).get_partial_shape()
            if shape.rank.is_static and shape.rank.get_length() == 2 and shape.is_static:
                costs[op.get_friendly_name()] = float(np.prod([d.get_length() for d in shape]))
    return costs


def ov_local_errors(
    ov: Any,
    model: Any,
    candidates: dict[str, tuple[str, str]],
    feeds: Sequence[dict[str, np.ndarray]],
    alpha: float | None = None,
) -> dict[str, float]:
    """Sensitivity from one fp32 OpenVINO run: each MatMul's own int8 error on its reference input
    (per-tensor activations, per-channel weights: what NNCF's transformer preset does), after
    SmoothQuant with ``alpha`` when NNCF applies it, so the ranking is of the MatMuls as quantized."""
    weights = _weights(model, candidates)
    runs = _run_exposed(ov, model, {candidates[n][0] for n in weights}, feeds)
    xs = {n: [r[candidates[n][0]] for r in runs] for n in weights}
    smooth = None
    if alpha is not None and alpha >= 0:
        amax = {n: np.max([np.abs(x).reshape(-1, x.shape[-1]).max(0) for x in xs[n]], axis=0) for n in weights}
        smooth = {n: smooth_scale(amax[n], weights[n], alpha) for n in weights}
    return local_errors(xs, weights, "tensor", smooth)


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


@dataclass(frozen=True)
class Calibration:
    """One NNCF setting: SmoothQuant's migration strength for MatMuls and how activation ranges are
    estimated (``nncf``: NNCF's default estimator; ``minmax``: the plain extremes, which keep the
    outlier channels BERT-style encoders carry instead of clipping them)."""

    alpha: float
    ranges: str = "nncf"

    @property
    def label(self) -> str:
        return f"alpha {self.alpha}, {self.ranges} ranges"

    def advanced(self, nncf: Any) -> Any:
        from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        kwargs: dict[str, Any] = {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=self.alpha)}
        if self.ranges == "minmax":
            kwargs["activations_range_estimator_params"] = RangeEstimatorParametersSet.MINMAX
        return nncf.AdvancedQuantizationParameters(**kwargs)


NNCF_DEFAULT = Calibration(0.95)  # NNCF's transformer defaults (its SmoothQuant alpha for MatMul is 0.95)
CALIBRATIONS: tuple[Calibration, ...] = (NNCF_DEFAULT,) + tuple(
    Calibration(a, "minmax") for a in (0.95, 0.8, 0.7, 0.6, 0.5)
)
HELD_OUT = 1 / 3  # share of the calibration feeds kept out of the trial quantizations, to score them


def _quantize(
    nncf: Any, model: Any, feeds: Sequence[dict[str, np.ndarray]], calibration: Calibration, scope: Any
) -> Any:
    return nncf.quantize(
        model.clone(),
        nncf.Dataset(list(feeds)),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(feeds),
        ignored_scope=scope,
        advanced_parameters=calibration.advanced(nncf),
    )


def _outputs(ov: Any, model: Any, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every float output of each feed, flattened and joined: one vector per feed, in f32."""
    compiled = ov.Core().compile_model(model, DEVICE, {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    out = []
    for feed in feeds:
        res = request.infer(feed)
        parts = [np.asarray(res[port], dtype=np.float64).ravel() for port in compiled.outputs]
        out.append(np.concatenate([p for p in parts if p.size]))
    return out


def choose_calibration(
    ov: Any, nncf: Any, model: Any, feeds: list[dict[str, np.ndarray]], extra: list[dict[str, np.ndarray]]
) -> tuple[Calibration, dict[str, Any]]:
    """The NNCF setting whose int8 IR is closest to the fp32 IR on calibration text it never saw.

    Why: NNCF's transformer defaults (SmoothQuant alpha 0.95) fail our gate on real checkpoints
    (all-MiniLM-L6-v2: pooled cosine min 0.943 against 0.995), so the fallback then keeps half the
    MatMuls in float. The best strength differs per model, and NNCF has no search for it. Each
    candidate (``CALIBRATIONS``) is quantized on two thirds of the calibration feeds (plus ``extra``,
    the feeds NNCF needs to reach every branch) and scored by the mean relative error of its outputs
    on the held-out third. The parity texts are not used: they judge the result (the gate), so
    choosing on them would flatter it. NNCF's defaults are a candidate, so the choice is never worse
    than them on the held-out text."""
    held = max(1, round(len(feeds) * HELD_OUT))
    if len(feeds) - held < 2:
        return NNCF_DEFAULT, {"chosen": NNCF_DEFAULT.label, "reason": "too few calibration feeds to hold any out"}
    start = time.perf_counter()
    fit, judge = feeds[:-held] + extra, feeds[-held:]
    reference = _outputs(ov, model, judge)
    errors = {}
    for calibration in CALIBRATIONS:
        quantized = _outputs(ov, _quantize(nncf, model, fit, calibration, None), judge)
        errors[calibration] = float(
            np.mean([np.linalg.norm(q - r) / max(np.linalg.norm(r), 1e-12) for q, r in zip(quantized, reference)])
        )
    chosen = min(CALIBRATIONS, key=lambda c: errors[c])
    record = {
        "chosen": chosen.label,
        "smooth_quant_alpha": chosen.alpha,
        "activation_ranges": chosen.ranges,
        "held_out_feeds": held,
        "held_out_relative_error": {c.label: round(e, 6) for c, e in errors.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    return chosen, record


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
    extra = switch_feeds(onnx_path, feeds)
    calibration = [NNCF_DEFAULT]  # NNCF's own settings first; chosen on held-out text only when they fail
    result.calibration = {
        "chosen": NNCF_DEFAULT.label,
        "reason": "NNCF's defaults, no search (the gate held or was off)",
    }

    def build(keep: frozenset[str]) -> Path:
        scope = nncf.IgnoredScope(names=sorted(keep), validate=False) if keep else None
        ov.save_model(_quantize(nncf, model, feeds + extra, calibration[0], scope), str(xml), compress_to_fp16=False)
        return xml

    def recalibrate() -> bool:
        calibration[0], result.calibration = choose_calibration(ov, nncf, model, feeds, extra)
        return calibration[0] != NNCF_DEFAULT

    rank_feeds = feeds[:8]

    def rank(quantized: Path) -> dict[str, float]:
        return ov_local_errors(ov, model, candidates, rank_feeds, calibration[0].alpha)

    if probe is not None and fallback:
        result.fallback = accuracy_fallback(
            list(candidates),
            build,
            probe,
            None,
            rank_feeds,
            rank=rank,
            budget_s=budget_s,
            recalibrate=recalibrate,
            cost=ov_matmul_costs(model, candidates),
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
