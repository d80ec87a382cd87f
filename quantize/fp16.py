"""FP16 conversion that stays finite on real text at any length.

ONNX Runtime's converter (``OnnxModel.convert_float_to_float16``) does the work; what we add:

* mask constants: transformers' SDPA masks use ``-inf`` or float32's lowest value; in fp16 the
  latter becomes ``-inf`` and ``score + -inf`` turns a fully padded row into NaN (inf - inf in
  Softmax). They are clamped to ``MASK_VALUE`` (exp(-1e4) is 0 in any precision) first.
* LayerNormalization keeps ``stash_type=1`` (mean and variance in fp32), which the converter
  leaves alone; the fused LayerNorm ops of ONNX Runtime accumulate in fp32 by design.
* graph inputs and outputs keep their types unless ``io_fp16`` (``--fp16-io``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

MASK_VALUE = -1.0e4
# Ops whose fp16 form needs a kernel ONNX Runtime's CPU and TensorRT both have; everything
# else in ONNX Runtime's default block list stays fp32 with casts around it.
FALLBACK_OPS = (
    "MatMul",
    "Gemm",
    "Attention",
    "MultiHeadAttention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "EmbedLayerNormalization",
    "Softmax",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "RotaryEmbedding",
    "Mul",
    "Add",
)


def clamp_mask_constants(model: onnx.ModelProto) -> int:
    """Replace float constants below ``MASK_VALUE`` (``-inf``, float32 lowest) by ``MASK_VALUE``.

    Only small tensors (<= 16 values) are touched: masks fill from scalars; weights are never that small.
    """
    changed = 0

    def fix(tensor: onnx.TensorProto) -> bool:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            return False
        arr = numpy_helper.to_array(tensor)
        if arr.size > 16 or not np.any(arr < MASK_VALUE):
            return False
        tensor.CopyFrom(numpy_helper.from_array(np.maximum(arr, MASK_VALUE).astype(np.float32), tensor.name))
        return True

    for init in model.graph.initializer:
        changed += fix(init)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and fix(attr.t):
                    changed += 1
        if node.op_type == "ConstantOfShape":
            for attr in node.attribute:
                if attr.name == "value" and fix(attr.t):
                    changed += 1
    return changed


def fp16_candidates(model: onnx.ModelProto) -> list[str]:
    """Nodes the accuracy fallback may keep in fp32, in graph order."""
    return [n.name for n in model.graph.node if n.op_type in FALLBACK_OPS and n.name]


def to_fp16(
    model: onnx.ModelProto, *, io_fp16: bool, keep_fp32: set[str] | frozenset[str] = frozenset()
) -> onnx.ModelProto:
    """Convert ``model`` (in memory) to fp16, keeping the nodes named in ``keep_fp32`` in fp32."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    clamp_mask_constants(model)
    wrapped = OnnxModel(model)
    wrapped.convert_float_to_float16(
        use_symbolic_shape_infer=True,
        keep_io_types=not io_fp16,
        node_block_list=sorted(keep_fp32),
    )
    return wrapped.model
