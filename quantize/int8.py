"""INT8 quantization: dynamic (weights int8, activations quantized at run time) and static QDQ.

Dynamic uses ONNX Runtime's ``MatMulNBits`` with 8-bit symmetric weights and
``accuracy_level=4`` (int8 compute on VNNI/AMX, each activation row quantized per block of
``BLOCK`` values at run time), not ``quantize_dynamic``'s ``MatMulInteger``/``QAttention``:
the latter quantizes each activation tensor with ONE scale for the whole batch, and on the
packaged MiniLM that alone costs pooled-embedding cosine 0.991 mean / 0.968 min (0.992 / 0.975
with only QAttention int8 and every MatMul in fp32) -- the gate asks for 0.997 / 0.995.
Blockwise row scales give 0.9995 / 0.997 with every projection int8 (see the closing note).

Static QDQ (``quantize_static``, per-channel weights, calibrated activation ranges) is the only
INT8 form TensorRT accepts; ONNX Runtime runs it too. Ranges are calibrated once per export
(``calibration_cache_path``) so that the fallback can re-quantize with nodes excluded cheaply.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from bert_export.models import BertExportError

from .calibration import FeedReader

BLOCK = 128  # divides every BERT/ModernBERT hidden and intermediate size we know (384 .. 4096)
MODES = ("dynamic", "static")


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes INT8 applies to, in graph order: MatMuls with an initializer weight."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def quantize_dynamic(src: Path, dst: Path, exclude: set[str] | frozenset[str] = frozenset()) -> None:
    """8-bit MatMulNBits on every quantizable MatMul except ``exclude``."""
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    model = onnx.load(str(src))
    targets = set(quantizable_nodes(model)) - set(exclude)
    # nodes_to_include does not restrict (any MatMul is taken), so name everything else as excluded
    skip = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in targets]
    cfg = DefaultWeightOnlyQuantConfig(block_size=BLOCK, is_symmetric=True, accuracy_level=4, bits=8)
    with _quiet():
        quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=BLOCK, is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=skip, algo_config=cfg)
        quantizer.process()
    _save(quantizer.model.model, dst)


def quantize_static(src: Path, dst: Path, feeds: list, cache: Path, *, symmetric: bool,
                    exclude: set[str] | frozenset[str] = frozenset()) -> None:
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
            str(src), str(dst), FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"], nodes_to_quantize=targets, nodes_to_exclude=sorted(exclude),
            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
            extra_options={
                # ORT's quantizer cannot type com.microsoft ops' outputs without it (fused graphs fail).
                "DefaultTensorType": onnx.TensorProto.FLOAT,
                "ActivationSymmetric": symmetric,
                "WeightSymmetric": True,
            },
        )


def _save(model: onnx.ModelProto, dst: Path) -> None:
    onnx.save(model, str(dst))


class _quiet:
    """ORT's quantizers log every node at INFO and warn about pre-processing; our step line says enough."""

    def __enter__(self) -> None:
        self.root = logging.getLogger()
        self.names = [logging.getLogger(n) for n in ("onnxruntime.quantization", "onnxruntime.quantization.matmul_nbits_quantizer")]
        self.levels = [lg.level for lg in (self.root, *self.names)]
        for lg in (self.root, *self.names):
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip((self.root, *self.names), self.levels):
            lg.setLevel(level)
