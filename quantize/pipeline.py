"""The optimize/precision step between the ONNX export and the parity check.

    export_onnx -> optimize_graph (fuse for the target runtime, then fp16 or int8, with the
    accuracy fallback when a parity probe is given) -> parity gate -> bundle

Everything that ends in the bundle's manifest is in ``OptimizeResult.to_manifest()``.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from bert_export.models import BertExportError, Family, TensorSpec
from bert_export.models.support import quiet_loggers

from . import fp16 as fp16_mod
from . import int8 as int8_mod
from .calibration import calibration_feeds
from .fallback import FallbackResult, accuracy_fallback
from .fusion import fold_for_trt, fuse_for_ort, fused_op_counts, unpack_attention

TARGETS = ("ort", "trt")
DEFAULT_INT8_MODE = {"ort": "dynamic", "trt": "static"}
DEFAULT_CALIB_SAMPLES = 24


@dataclass(frozen=True)
class OptimizeOptions:
    """What the user asked for (the CLI's --runtime/--fp16/--int8/... flags)."""

    runtime: str = "ort"
    optimize: bool = True
    fp16: bool = False
    fp16_io: bool = False
    int8: bool = False
    int8_mode: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    fallback: bool = True

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    @property
    def mode(self) -> str | None:
        return (self.int8_mode or DEFAULT_INT8_MODE[self.runtime]) if self.int8 else None

    def check(self) -> None:
        if self.runtime not in TARGETS:
            raise BertExportError(f"unknown --runtime {self.runtime!r} for export; choose one of: {', '.join(TARGETS)}")
        if self.fp16 and self.int8:
            raise BertExportError("--fp16 and --int8 are exclusive; pick one precision")
        if self.fp16_io and not self.fp16:
            raise BertExportError("--fp16-io needs --fp16")
        if self.int8_mode is not None and not self.int8:
            raise BertExportError("--int8-mode needs --int8")
        if self.int8_mode not in (None, *int8_mod.MODES):
            raise BertExportError(f"unknown --int8-mode {self.int8_mode!r}; choose dynamic or static")
        if self.runtime == "trt" and self.mode == "dynamic":
            raise BertExportError("TensorRT accepts only QDQ INT8; use --int8-mode static with --runtime trt")
        if self.calib_samples < 1:
            raise BertExportError(f"--calib-samples must be >= 1, got {self.calib_samples}")


@dataclass
class OptimizeResult:
    options: OptimizeOptions
    fused_ops: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    fallback: FallbackResult | None = None
    output_dtype: str = "float32"

    def to_manifest(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {
            "target": o.runtime, "optimized": o.optimize, "precision": o.precision, "fused_ops": self.fused_ops,
            "io_fp16": o.fp16_io,
        }
        if o.int8:
            static = o.mode == "static"
            out["int8"] = {
                "mode": o.mode, "calib_samples": o.calib_samples, "weights": "int8 symmetric per output channel",
                "activations": ("calibrated per tensor, " + ("int8 symmetric" if o.runtime == "trt" else "uint8 asymmetric"))
                if static else f"int8 per token row at run time, after SmoothQuant (alpha {int8_mod.SMOOTH_ALPHA}) channel scaling",
                "kernel": "QDQ" if static else "MatMulIntegerToFloat (u8s8)",
            }
        if o.fp16 or o.int8:
            out["fallback"] = {"enabled": o.fallback, **(self.fallback.to_json() if self.fallback else {"kept_fp32": []})}
        return out


# onnxscript/onnx-ir log every pass at INFO, which shows once anything (ORT's quantizer does) configures the
# root logger; the progress line is the user's view of this step.
@quiet_loggers("onnxscript", "onnx_ir", "onnxruntime", level=logging.WARNING, root=True)
def optimize_graph(
    path: Path,
    family: Family,
    inputs: tuple[TensorSpec, ...],
    options: OptimizeOptions,
    *,
    tokenizer: Any | None,
    max_seq: int,
    vocab_size: int,
    probe: Callable[[Path], Any] | None = None,
    seed: int = 0,
) -> OptimizeResult:
    """Rewrite ``path`` in place: fusions for the target, then the precision, then fallback."""
    options.check()
    result = OptimizeResult(options)
    if options.optimize:
        model = ir.load(path)
        if options.runtime == "ort":
            model = fuse_for_ort(model, padding_mask_only=family.local_window_attr is None, max_positions=max_seq)
        else:
            model = fold_for_trt(model)
        _save_ir(model, path)
    with tempfile.TemporaryDirectory(prefix="bert-export-opt-") as work_dir:
        work = Path(work_dir)
        fp32_path = work / "fp32.onnx"
        shutil.copyfile(path, fp32_path)
        if options.precision != "fp32":
            feeds = calibration_feeds(inputs, tokenizer, samples=options.calib_samples, max_seq=min(max_seq, 128),
                                      vocab_size=vocab_size, seed=seed)
            build, candidates = _builder(options, fp32_path, path, work, feeds)
            if probe is not None and options.fallback:
                result.fallback = accuracy_fallback(candidates, build, probe, fp32_path, feeds[:8])
            else:
                build(frozenset())
    final = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in final.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    result.ops, result.nodes = dict(sorted(counts.items())), len(final.graph.node)
    result.fused_ops = fused_op_counts(ir.from_proto(final))
    result.output_dtype = "float16" if options.fp16_io else "float32"
    return result


def _builder(options: OptimizeOptions, fp32_path: Path, out: Path, work: Path, feeds: list) -> tuple[Callable[[frozenset[str]], Path], list[str]]:
    """A function that writes the low-precision graph with some nodes kept fp32, and the candidates."""
    base = onnx.load(str(fp32_path))
    if options.fp16:
        def build_fp16(keep: frozenset[str]) -> Path:
            onnx.save(fp16_mod.to_fp16(copy.deepcopy(base), io_fp16=options.fp16_io, keep_fp32=keep), str(out))
            return out
        return build_fp16, fp16_mod.fp16_candidates(base)
    candidates = int8_mod.quantizable_nodes(base)
    if options.mode == "dynamic":
        unpacked = work / "fp32-unpacked.onnx"
        model = ir.load(fp32_path)
        unpack_attention(model)
        ir.save(model, unpacked)
        smooth = int8_mod.smooth_factors(unpacked, feeds)

        def build_dynamic(keep: frozenset[str]) -> Path:
            int8_mod.quantize_rowwise(unpacked, out, exclude=keep, smooth=smooth)
            return out
        return build_dynamic, int8_mod.quantizable_nodes(onnx.load(str(unpacked)))
    cache = work / "calibration.json"

    def build_static(keep: frozenset[str]) -> Path:
        int8_mod.quantize_static(fp32_path, out, feeds, cache, symmetric=options.runtime == "trt", exclude=keep)
        return out
    return build_static, candidates


def _save_ir(model: ir.Model, path: Path) -> None:
    data = path.with_name(path.name + ".data")
    big = sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None) > 1_800_000_000
    ir.save(model, path, external_data=data.name if big else None)


def optimize_export(path: Path, family: Family, task: Any, outputs: tuple[TensorSpec, ...], graph: Any, config: Any,
                    tokenizer: Any | None, max_seq: int, seed: int, pooling: str, options: OptimizeOptions,
                    validate: bool, cases: list[Any] | None = None, reference: list[Any] | None = None) -> OptimizeResult:
    """``optimize_graph`` as the exporter calls it: the parity probe is built here when validating.

    ``cases``/``reference``: the parity cases and their PyTorch outputs when the caller has them
    already (a multi-precision export runs PyTorch once for all its graphs)."""
    probe = None
    if validate and options.precision != "fp32" and options.fallback:
        from bert_export.runtimes.cases import build_cases

        from .probe import ParityProbe

        if cases is None:
            cases, reference = build_cases(family, task, config, tokenizer, max_seq, seed), None
        # the graph's own output types (--fp16-io: float16), which ORT runners check against what they are told
        graph_outputs = tuple(TensorSpec(o.name, "float16", o.axes) for o in outputs) if options.fp16_io else outputs
        probe = ParityProbe(graph, family.inputs, graph_outputs, task, cases, pooling, max_seq, options.precision, reference)
    return optimize_graph(path, family, family.inputs, options, tokenizer=tokenizer, max_seq=max_seq,
                          vocab_size=int(config.vocab_size), probe=probe, seed=seed)


def describe(options: OptimizeOptions) -> str:
    """The progress line for the step."""
    what = ["fusing for " + ("ONNX Runtime" if options.runtime == "ort" else "TensorRT (standard ONNX)")] if options.optimize else []
    if options.fp16:
        what.append("fp16" + (" with fp16 inputs/outputs" if options.fp16_io else ""))
    if options.int8:
        what.append(f"int8 {options.mode}")
    return "Optimizing: " + ", ".join(what)


def update_manifest(manifest: dict[str, Any], result: OptimizeResult) -> None:
    """Precision, target, fused-op counts and the final graph's op counts into the manifest."""
    manifest["precision"] = result.options.precision
    manifest["runtime"] = result.options.runtime
    manifest["optimization"] = result.to_manifest()
    manifest["graph"]["exported_ops"] = manifest["graph"].get("ops")
    manifest["graph"]["ops"], manifest["graph"]["nodes"] = result.ops, result.nodes
    if result.output_dtype != "float32":
        for out in manifest["outputs"]:
            if out.get("dtype") == "float32":
                out["dtype"] = result.output_dtype
