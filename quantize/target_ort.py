"""The ONNX Runtime target (``--runtime ort``, the default): ONNX Runtime's fused ops in the graph.

The graph gets ONNX Runtime's contrib fusions (Attention/MultiHeadAttention, EmbedLayerNormalization,
BiasGelu, ...; the residual norms stay standard LayerNormalization, the faster CPU kernel) and, for local-window families, banded local attention; int8 is dynamic (per-row
MatMulIntegerToFloat) or static QDQ, the default being the family's measured fastest passing mode.
Gated in ONNX Runtime on the CPU (no artefact beside the graph).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from bert_export.models import Family
from bert_export.quantize.banded_attention import banded_local_attention
from bert_export.quantize.fusion import fuse_for_ort
from bert_export.quantize.target import Target

if TYPE_CHECKING:
    from bert_export.quantize.pipeline import OptimizeOptions


def passes(model: ir.Model, family: Family, options: OptimizeOptions, max_seq: int) -> tuple[ir.Model, int]:
    """ORT's fusions, then (its own pass) local layers as banded O(n·w) attention."""
    model = fuse_for_ort(model, family.fusions, max_positions=max_seq)
    if options.banded_attention and family.fusions.banded_local_attention:
        return model, banded_local_attention(model, switch=options.length_switch)
    return model, 0


TARGET = Target(
    name="ort",
    title="ONNX Runtime",
    help="ort gets ONNX Runtime's fused ops",
    passes=passes,
    precisions=("fp32", "fp16", "int8"),
    lacks={"bf16": "ONNX Runtime's CPU kernels have no bf16 path"},
    int8_modes=("dynamic", "static"),
    int8_default=None,  # per family: Family.int8_mode, measured (benchmarks/cpu_int8_xeon_amx.md, cpu_int8.md)
    # ModernBERT's global layers run ONNX Runtime's flash kernel, its local ones are banded: 8192 is affordable
    long_inputs=True,
)
