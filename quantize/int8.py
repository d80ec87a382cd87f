"""INT8 quantization: dynamic (weights int8, activations quantized at run time) and static QDQ.

Dynamic (``quantize_rowwise``): int8 weights per output channel, and each activation row
(token) gets its own int8 scale at run time, after SmoothQuant channel scaling calibrated on
real text; the product runs on ONNX Runtime's u8s8 ``MatMulIntegerToFloat`` (VNNI). What was tried
and measured on the packaged MiniLM (pooled-embedding cosine mean / min, gate 0.997 / 0.995)
and a 128x768x3072 MatMul on this 2-core AVX512-VNNI EPYC:

* ``quantize_dynamic`` per-channel (DynamicQuantizeLinear + MatMulInteger + QAttention): one
  scale per activation tensor: 0.991 / 0.968 -- fails, whichever single node is left in fp32;
* ``MatMulNBits`` bits=8, accuracy_level=4, blocks of 128 (per-row-block activation scales):
  0.9995 / 0.997 but 2.2 ms per MatMul vs 2.9 ms fp32 (full BERT-base slower than fp32);
* per-row scales without smoothing: 0.9956 / 0.976; with SmoothQuant alpha 0.5: 0.998 / 0.993,
  and the accuracy fallback keeps two FFN-down MatMuls in fp32 to pass (0.9988 / 0.9957);
  0.8 ms per MatMul against 0.46 ms for the per-tensor kernel.

Static QDQ (``quantize_static``, per-channel weights, calibrated activation ranges) is the only
INT8 form TensorRT accepts; ONNX Runtime runs it too. Ranges are calibrated once per export
(``calibration_cache_path``) so that the fallback can re-quantize with nodes excluded cheaply.
On MiniLM plain static QDQ gives 0.938 / 0.821 and needs most MatMuls kept in fp32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnx

from bert_export.models import BertExportError
from bert_export.models.support import quiet_loggers
from bert_export.quantize.calibration import FeedReader
from bert_export.quantize.fallback import smooth_scale

SMOOTH_ALPHA = 0.5  # best of 0.25 / 0.4 / 0.5 / 0.75 on MiniLM (pooled cosine min)
MODES = ("dynamic", "static")


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes INT8 applies to, in graph order: MatMuls with an initializer weight."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def quantize_static(
    src: Path, dst: Path, feeds: list, cache: Path, *, symmetric: bool, exclude: set[str] | frozenset[str] = frozenset()
) -> None:
    """QDQ with per-channel int8 weights and MinMax-calibrated activations (cached in ``cache``).

    ``symmetric``: int8 activations with zero point 0 (what TensorRT requires); otherwise
    uint8 asymmetric activations, which ONNX Runtime's CPU kernels prefer (U8S8).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if not feeds:
        raise BertExportError("static INT8 needs calibration text; pass --calib-samples 1 or more")
    model = onnx.load(str(src))
    targets = quantizable_nodes(model)
    with _quiet():
        ort_quantize_static(
            str(src),
            str(dst),
            FeedReader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=targets,
            nodes_to_exclude=sorted(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            extra_options={
                # ORT's quantizer cannot type com.microsoft ops' outputs without it (fused graphs fail).
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
                # Q/DQ on the MatMuls' inputs only: a Q/DQ pair on each output would requantize every projection's
                # result for float consumers (LayerNorm, attention, GELU), adding error and two ops; and ONNX
                # Runtime's QDQ propagation pushes such a DQ through Reshape/Slice chains into the local layers'
                # length switch (quantize/banded_attention.py), whose If reads them as implicit inputs, and aborts
                # session creation (ORT 1.32). Without it ORT fuses DQ, DQ, MatMul into MatMulIntegerToFloat.
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )


def _save(model: onnx.ModelProto, dst: Path) -> None:
    onnx.save(model, str(dst))


def _quiet() -> contextlib.AbstractContextManager[None]:
    """ORT's quantizers log every node at INFO and warn about pre-processing; our step line says enough."""
    return quiet_loggers("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer", root=True)


def smooth_factors(src: Path, feeds: list, alpha: float = SMOOTH_ALPHA) -> dict[str, np.ndarray]:
    """SmoothQuant's per-input-channel factors (``fallback.smooth_scale``) for every quantizable
    MatMul, from calibration text: a row's int8 scale is otherwise set by the outlier channels."""
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(src))
    targets = set(quantizable_nodes(model))
    inputs = {n.name: n.input[0] for n in model.graph.node if n.name in targets}
    known = {o.name for o in model.graph.output}
    for name in sorted(set(inputs.values()) - known):
        model.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every exposed tensor
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    amax: dict[str, np.ndarray] = {}
    for feed in feeds:
        values = dict(zip(names, sess.run(None, feed)))
        for tensor in set(inputs.values()):
            v = np.abs(values[tensor]).reshape(-1, values[tensor].shape[-1]).max(0)
            amax[tensor] = np.maximum(amax.get(tensor, 0.0), v)
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.name in targets:
            out[node.name] = smooth_scale(amax[node.input[0]], numpy_helper.to_array(inits[node.input[1]]), alpha)
    return out


def quantize_rowwise(
    src: Path,
    dst: Path,
    exclude: set[str] | frozenset[str] = frozenset(),
    smooth: dict[str, np.ndarray] | None = None,
    per_tensor: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Dynamic INT8 with one activation scale per token row, on ONNX Runtime's u8s8 integer GEMM.

    Per MatMul ``y = x @ W`` (W an initializer [K, N]):

        s   = max(|x|, axis=-1) / 127                       (per row, at run time)
        x_q = uint8(round(x / s) + 128)                      (symmetric, shifted to u8, zero point 128)
        y   = MatMulIntegerToFloat(x_q, W_q, 1, w_s, 128) * s (W_q int8 per output channel)

    Why not ``quantize_dynamic`` (DynamicQuantizeLinear + MatMulInteger): one scale for the
    whole activation tensor, which on the packaged MiniLM costs cosine 0.991 / 0.968; per-row
    scales give 0.999 / 0.997. Why not ``MatMulNBits`` (8-bit, accuracy_level 4, also per-row
    blocks): on this AVX512-VNNI EPYC it runs a 128x768x3072 MatMul in 2.2 ms against 0.46 ms
    for MatMulInteger and 2.9 ms for fp32; this construct takes 0.8 ms. Caveat: on CPUs without
    VNNI, u8s8 kernels (vpmaddubsw) can saturate with full-range int8 weights.

    Nodes in ``per_tensor`` (chosen by the granularity pass, quantize/pipeline.py) use ONNX Runtime's
    ``DynamicQuantizeMatMul`` instead: one activation scale per tensor, quantization fused into the
    GEMM (one kernel instead of nine), for the MatMuls whose inputs have no outlier rows.
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    targets = set(quantizable_nodes(model)) - set(exclude)
    shared = [
        numpy_helper.from_array(np.array([-1], np.int64), "rq_axes"),
        numpy_helper.from_array(np.array(1e-8, np.float32), "rq_eps"),
        numpy_helper.from_array(np.array(127.0, np.float32), "rq_127"),
        numpy_helper.from_array(np.array(1 / 127.0, np.float32), "rq_inv127"),
        numpy_helper.from_array(np.array(128, np.uint8), "rq_zp"),
        numpy_helper.from_array(np.array(1.0, np.float32), "rq_one"),
    ]
    new_nodes, used = [], set()
    for node in model.graph.node:
        if node.name not in targets:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        p = node.name
        x, y = node.input[0], node.output[0]
        if smooth is not None and p in smooth:
            w = w * smooth[p][:, None]
            model.graph.initializer.append(numpy_helper.from_array((1.0 / smooth[p]).astype(np.float32), f"{p}_smooth"))
            new_nodes.append(helper.make_node("Mul", [x, f"{p}_smooth"], [f"{p}_xsm"], name=f"{p}_smooth"))
            x = f"{p}_xsm"
        w_scale = np.maximum(np.abs(w).max(0), 1e-12) / 127.0
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        model.graph.initializer.extend(
            [numpy_helper.from_array(w_q, f"{p}_Wq"), numpy_helper.from_array(w_scale.astype(np.float32), f"{p}_ws")]
        )
        used.add(node.input[1])
        if p in per_tensor:  # activation range per tensor, quantized inside the GEMM kernel
            new_nodes.append(
                helper.make_node(
                    "DynamicQuantizeMatMul", [x, f"{p}_Wq", f"{p}_ws"], [y], name=f"{p}_int8t", domain="com.microsoft"
                )
            )
            continue
        new_nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("ReduceMax", [f"{p}_abs", "rq_axes"], [f"{p}_amax"], name=f"{p}_amax", keepdims=1),
            helper.make_node("Max", [f"{p}_amax", "rq_eps"], [f"{p}_amax_c"], name=f"{p}_amax_c"),
            helper.make_node("Div", ["rq_127", f"{p}_amax_c"], [f"{p}_inv"], name=f"{p}_inv"),
            helper.make_node("Mul", [x, f"{p}_inv"], [f"{p}_xs"], name=f"{p}_xs"),
            # round, +128, saturate, cast in one op (scale 1: the row scale is already applied)
            helper.make_node("QuantizeLinear", [f"{p}_xs", "rq_one", "rq_zp"], [f"{p}_xq"], name=f"{p}_xq"),
            # int32 product, cast, times the per-column weight scale: one kernel
            helper.make_node(
                "MatMulIntegerToFloat",
                [f"{p}_xq", f"{p}_Wq", "rq_one", f"{p}_ws", "rq_zp"],
                [f"{p}_yw"],
                name=f"{p}_int8",
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [f"{p}_amax_c", "rq_inv127"], [f"{p}_s"], name=f"{p}_s"),
            helper.make_node("Mul", [f"{p}_yw", f"{p}_s"], [y], name=f"{p}_y"),
        ]
    if targets:
        if targets - set(per_tensor):  # the per-row construct's constants
            model.graph.initializer.extend(shared)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    still_used = {i for n in model.graph.node for i in n.input}
    keep = [i for i in model.graph.initializer if i.name not in used or i.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    _save(model, dst)
