"""The TensorRT target (``--runtime trt``): standard ONNX, which TensorRT fuses by itself.

Static int8 only, as symmetric QDQ (what TensorRT builds INT8 kernels from). The engine is built
per GPU later (``bert-export engine``, runtimes/trt_build.py), so the export's parity gate runs the
standard-ONNX graph in ONNX Runtime on the CPU, where global attention stays unfused: long inputs
are therefore not the default (a local-window family is capped at 2048).
"""

from __future__ import annotations

from bert_export.quantize.target import Target, standard_onnx_passes

TARGET = Target(
    name="trt",
    title="TensorRT (standard ONNX)",
    help="trt stays standard ONNX (TensorRT fuses by itself)",
    passes=standard_onnx_passes,
    precisions=("fp32", "fp16", "int8"),
    lacks={"bf16": "its parity gate runs in ONNX Runtime, whose CPU kernels have no bf16 path"},
    int8_modes=("static",),
    int8_default="static",
    int8_note="TensorRT accepts only QDQ INT8",
    int8_symmetric=True,
    long_inputs=False,
)
