"""The precision registry: what each precision means, in one entry.

A precision is its parity gate (the tolerances a graph must hold against PyTorch), the graph
file it is stored as (transformers.js' dtype suffixes), the dtype name transformers.js knows it
by, the OpenVINO inference hint it runs under, and whether a bundle can hold a graph of it.
Adding a precision is one entry here; the comparator, the layout and the runners read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    """A precision's tolerances. ``None`` means the number is reported, not gated."""

    max_abs: float | None
    agreement: float
    cos_mean: float
    cos_min: float


@dataclass(frozen=True)
class Precision:
    name: str
    gate: Gate
    suffix: str  # onnx/model<suffix>.onnx
    tjs_dtype: str  # transformers.js' name for the graph's dtype
    openvino_hint: str  # OpenVINO's inference_precision_hint for a graph of this precision
    bundle_graph: bool = True  # a bundle stores a graph of this precision (bf16 is a hint on the fp32 graph)


PRECISIONS_REGISTRY: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", Gate(max_abs=1e-4, agreement=0.99, cos_mean=0.99999, cos_min=0.9999), "", "fp32", "f32"),
        Precision("fp16", Gate(max_abs=None, agreement=0.995, cos_mean=0.9999, cos_min=0.999), "_fp16", "fp16", "f32"),
        Precision("int8", Gate(max_abs=None, agreement=0.97, cos_mean=0.997, cos_min=0.995), "_quantized", "q8", "f32"),
        # OpenVINO's bf16 hint (its default on AVX512-BF16/AMX CPUs; the fp32 gate's max_abs fails it). Measured on
        # the packaged MiniLM: pooled cosine mean 0.99998 / min 0.99994, i.e. fp16's cosine floors hold; agreement is
        # a little looser than fp16's (8 mantissa bits against 10: near-ties flip more often).
        Precision(
            "bf16",
            Gate(max_abs=None, agreement=0.99, cos_mean=0.9999, cos_min=0.999),
            "_bf16",
            "fp32",
            "bf16",
            bundle_graph=False,
        ),
    )
}

GATES: dict[str, Gate] = {name: p.gate for name, p in PRECISIONS_REGISTRY.items()}
BUNDLE_PRECISIONS: tuple[str, ...] = tuple(n for n, p in PRECISIONS_REGISTRY.items() if p.bundle_graph)
HINTS: dict[str, str] = {name: p.openvino_hint for name, p in PRECISIONS_REGISTRY.items()}
