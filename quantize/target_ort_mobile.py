"""The ONNX Runtime mobile target (``--runtime ort-mobile``): the graph in ORT format for reduced-size builds.

What a mobile app ships is not an ``.onnx`` file but ONNX Runtime's own flatbuffer format (``.ort``), the
only format a *minimal* ONNX Runtime build loads, plus the operator list a *reduced* build is compiled
from (``--include_ops_by_config required_operators.config``). This target produces both:

    export -> ONNX Runtime's fusions (as --runtime ort) -> fp16/int8 + fallback -> ORT format at level *basic*
           -> onnx/model<suffix>.ort            the bundle's graph (what run/validate/bench and the C++ demo load)
           -> onnx/model<suffix>.required_operators.config   (manifest: graph.required_operators)

Choices, and why:

- **Graph passes: the ``ort`` target's.** Its fused ops (Attention,
  EmbedLayerNormalization, BiasGelu, and for int8 MatMulIntegerToFloat/DynamicQuantizeMatMul) are
  ``com.microsoft`` contrib kernels of the CPU execution provider, written in portable C++ over MLAS, so
  they exist in ARM builds. A reduced build keeps every operator its config lists, contrib ones included,
  unless it is built with ``--disable_contrib_ops``; the config lists them, so build without that flag.
  (The retired pre-built "onnxruntime-mobile" packages, ORT <= 1.18, shipped a fixed operator set without
  Attention/SkipLayerNormalization/EmbedLayerNormalization: use the full onnxruntime-android/-ios package
  or a reduced build from this config.)
- **Conversion level: basic** (``ORT_ENABLE_BASIC``, ONNX Runtime's "Fixed" optimization style at that
  level). Basic optimizations are semantics-preserving rewrites into ONNX ops (constant folding, redundant
  node removal, Gemm fusion) and are what ONNX Runtime's docs say to bake into an ORT-format model. Higher
  levels would bake in what depends on the converting machine: extended adds CPU-provider fusions
  (FusedGemm, QDQ -> QLinear* chosen per ``--target_platform``), layout/all adds x86's NCHWc. A minimal
  build runs no optimizer at load (neither does a full build on an ``.ort``: checked), so the gate below
  runs exactly the graph a phone runs, kernels aside.
- **Conversion code:** the two steps ONNX Runtime's ``convert_onnx_models_to_ort`` takes (a CPU session
  saving its optimized graph with ``session.save_model_format=ORT``, then
  ``ort_format_model.create_config_from_models``), called directly so that the level is an argument and
  not the process-wide environment variable that script reads, and so that the config names the bundle's
  file instead of a temporary path.
- **Precisions:** fp32, fp16 and int8 through the same precision registry and fallback as ``ort`` (ORT's
  CPU provider runs the fp16 graph; ARM computes fp16 natively). No bf16: the CPU kernels have none.
- **Fixed-shape variants** (NNAPI/CoreML want static shapes): left out. They need one ``.ort`` per shape and
  a runner that picks among them; ``python -m onnxruntime.tools.make_dynamic_shape_fixed`` on the bundle's
  ONNX export is the manual route (docs/edge.md).

The gate runs the ``.ort`` file in ONNX Runtime's CPU provider (runtimes/ort_mobile_runner.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_export.models import BertExportError, TensorSpec
from bert_export.models.support import first_line, quiet_loggers
from bert_export.quantize import target_ort
from bert_export.quantize.target import GraphFormat, Target
from bert_export.runtimes.base import Runner
from bert_export.runtimes.ort_mobile_runner import ORT_SUFFIX, OrtMobileRunner

LEVEL = "basic"  # the optimization level baked into the .ort (see the module docstring)
CONFIG_SUFFIX = ".required_operators.config"  # ONNX Runtime's own name for the reduced build's input


@dataclass
class OrtFormatGraph:
    """An ``.ort`` graph and the reduced build's operator config, written in a work directory."""

    path: Path
    operators: dict[str, list[str]]  # "domain;opset" -> operator names (what the config lists)
    version: str
    extras: dict[str, Path] = field(default_factory=dict)

    def to_manifest(self, names: dict[str, str]) -> dict[str, Any]:
        return {
            "required_operators": {"file": names[CONFIG_SUFFIX], "ops": self.operators},
            "ort_format": {"onnxruntime": self.version, "optimization_level": LEVEL, "style": "Fixed"},
        }


def convert(onnx_path: Path, work: Path) -> OrtFormatGraph:
    """``onnx_path`` as ``work/model.ort`` (optimized at ``LEVEL``) and ``work/model.required_operators.config``."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    out = work / "model.ort"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated types
        raise BertExportError(
            f"ONNX Runtime could not convert the graph to ORT format ({first_line(exc, 200)}); "
            "export with --runtime ort instead"
        ) from None
    raw = work / "raw.config"
    with quiet_loggers("ort_format_model.utils", level=logging.WARNING):  # its "Created config in <tmp>" line
        create_config_from_models([out], raw, False)
    operators = parse_config(raw.read_text(encoding="utf-8"))
    config = work / f"model{CONFIG_SUFFIX}"
    config.write_text(config_text(operators), encoding="utf-8")
    return OrtFormatGraph(out, operators, ort.__version__, {CONFIG_SUFFIX: config})


def parse_config(text: str) -> dict[str, list[str]]:
    """ONNX Runtime's ``domain;opset;Op1,Op2`` lines (comments skipped) as ``{"domain;opset": [ops]}``."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        out[f"{domain};{opset}"] = sorted(o for o in ops.split(",") if o)
    return out


def config_text(operators: dict[str, list[str]]) -> str:
    """The config a reduced build takes, headed by what it is (no machine-specific paths)."""
    lines = [
        "# Operators of this bundle's ORT-format graph (bert-export --runtime ort-mobile).",
        "# Build a reduced ONNX Runtime with: build.sh --minimal_build --include_ops_by_config <this file>",
        "# (contrib ops are listed: do not pass --disable_contrib_ops)",
    ]
    lines += [f"{key};{','.join(ops)}" for key, ops in sorted(operators.items())]
    return "\n".join(lines) + "\n"


def gate_runner(
    path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_seq: int, hint: str
) -> Runner:
    """The ``.ort`` file in ONNX Runtime on the CPU (no optimizer at load: the graph a minimal build runs)."""
    return OrtMobileRunner(path, inputs, outputs, max_seq)


TARGET = Target(
    name="ort-mobile",
    title="ONNX Runtime (then ORT format for mobile builds)",
    help=f"ort-mobile gets ort's fused ops, converted to ORT format (onnx/model*{ORT_SUFFIX}) with the "
    f"required_operators.config a reduced-size ONNX Runtime build takes",
    passes=target_ort.passes,
    precisions=("fp32", "fp16", "int8"),
    lacks={"bf16": "ONNX Runtime's CPU kernels have no bf16 path"},
    int8_modes=("dynamic", "static"),
    int8_default=None,  # per family, as --runtime ort (the same graphs before conversion)
    graph_format=GraphFormat(ORT_SUFFIX, "ORT format", convert, gate_runner),
    long_inputs=True,  # the same kernels as --runtime ort
)
