"""The optimize/precision step between the ONNX export and the parity check.

    export_onnx -> optimize_graph (the target's graph passes, then fp16 or int8, with the
    accuracy fallback when a parity probe is given; or the target's own artefact, e.g. the
    OpenVINO IR) -> parity gate -> bundle

What differs per target (``--runtime``) is declared by its registry entry (quantize/targets.py);
nothing here names one. Everything that ends in the bundle's manifest is in ``OptimizeResult.to_manifest()``.
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
from bert_export.models.precisions import HINTS
from bert_export.models.support import quiet_loggers
from bert_export.quantize import fp16 as fp16_mod
from bert_export.quantize import int8 as int8_mod
from bert_export.quantize.banded_attention import read_switch
from bert_export.quantize.calibration import calibration_feeds
from bert_export.quantize.fallback import (
    DEFAULT_BUDGET_S,
    FallbackResult,
    accuracy_fallback,
    matmul_costs,
    onnx_local_rank,
)
from bert_export.quantize.fusion import fused_op_counts, unpack_attention
from bert_export.quantize.target import Target
from bert_export.quantize.targets import (
    DEFAULT_TARGET,
    get_target,
    int8_mode_refusal,
    precision_refusal,
)

DEFAULT_CALIB_SAMPLES = 24
MIN_PER_TENSOR_BUDGET_S = 30.0  # the per-tensor pass's floor when the fp32 fallback used the whole budget


@dataclass(frozen=True)
class OptimizeOptions:
    """What the user asked for (the CLI's --runtime/--fp16/--int8/... flags)."""

    runtime: str = DEFAULT_TARGET  # the target (quantize/targets.py)
    optimize: bool = True
    fp16: bool = False
    fp16_io: bool = False
    bf16: bool = False
    int8: bool = False
    int8_mode: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    fallback: bool = True
    fallback_budget: float = DEFAULT_BUDGET_S
    banded_attention: bool = True  # sliding-window layers as blocked attention (quantize/banded_attention.py)
    # ...behind an in-graph length switch: dense up to banded_attention.switch_length, blocked past it (False: always
    # blocked, for comparison)
    length_switch: bool = True
    per_tensor: bool = (
        False  # dynamic int8: MatMuls that pass with one activation scale per tensor use the fused kernel
    )

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "bf16" if self.bf16 else "fp32"

    @property
    def target(self) -> Target:
        return get_target(self.runtime)

    @property
    def mode(self) -> str | None:
        """The int8 mode: ``--int8-mode``, else the target's default (None for a per-family default not yet
        resolved: ``resolve_int8_mode``)."""
        return (self.int8_mode or self.target.int8_default) if self.int8 else None

    def check(self) -> None:
        target = get_target(self.runtime)
        if sum((self.fp16, self.int8, self.bf16)) > 1:
            raise BertExportError("--fp16, --bf16 and --int8 are exclusive; pick one precision")
        if self.precision != "fp32" and self.precision not in target.precisions:
            raise BertExportError(precision_refusal(target, self.precision))
        if self.fp16_io and not self.fp16:
            raise BertExportError("--fp16-io needs --fp16")
        if self.int8_mode is not None and not self.int8:
            raise BertExportError("--int8-mode needs --int8")
        if self.int8_mode not in (None, *int8_mod.MODES):
            raise BertExportError(f"unknown --int8-mode {self.int8_mode!r}; choose dynamic or static")
        if self.int8_mode is not None and self.int8_mode not in target.int8_modes:
            raise BertExportError(int8_mode_refusal(target, self.int8_mode))
        if target.require is not None:
            target.require(self)  # its optional packages, before any work starts
        if self.fallback_budget <= 0:
            raise BertExportError(f"--fallback-budget must be > 0 seconds, got {self.fallback_budget:g}")
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
    mode_choice: dict[str, Any] = field(default_factory=dict)
    artefact: Any = None  # what the target wrote beside the graph (quantize.target.ArtefactRecord), if anything
    banded_layers: int = 0
    switch: int | None = None  # local layers: the longest length run dense (the graph's If), None without a switch
    granularity: FallbackResult | None = None  # dynamic int8: which MatMuls stay per-row (the rest per-tensor)

    def to_manifest(self) -> dict[str, Any]:
        o = self.options
        out: dict[str, Any] = {
            "target": o.runtime,
            "optimized": o.optimize,
            "precision": o.precision,
            "fused_ops": self.fused_ops,
            "io_fp16": o.fp16_io,
            "banded_attention_layers": self.banded_layers,
        }
        if self.switch is not None:
            out["local_attention_switch"] = self.switch
        if o.int8 and o.target.int8_record is not None:
            out["int8"] = o.target.int8_record(o)
        elif o.int8:
            static = o.mode == "static"
            out["int8"] = {
                "mode": o.mode,
                "calib_samples": o.calib_samples,
                "weights": "int8 symmetric per output channel",
                "activations": (
                    "calibrated per tensor, " + ("int8 symmetric" if o.target.int8_symmetric else "uint8 asymmetric")
                )
                if static
                else f"int8 per token row at run time, after SmoothQuant (alpha {int8_mod.SMOOTH_ALPHA}) channel scaling",
                "kernel": "QDQ" if static else "MatMulIntegerToFloat (u8s8)",
                "mode_choice": self.mode_choice,
            }
            if self.granularity is not None:
                g = self.granularity.to_json()
                g["kept_per_row"] = g.pop("kept_fp32")
                per_tensor = self.ops.get("DynamicQuantizeMatMul", 0)
                out["int8"]["kernel"] = (
                    f"MatMulIntegerToFloat (u8s8, per-row activations) on {self.ops.get('MatMulIntegerToFloat', 0)} "
                    f"MatMuls, DynamicQuantizeMatMul (per-tensor, fused) on {per_tensor}"
                )
                out["int8"]["granularity"] = g
        if self.artefact is not None:
            out[o.runtime] = self.artefact.to_manifest()
        if o.fp16 or o.int8:
            out["fallback"] = {
                "enabled": o.fallback,
                **(self.fallback.to_json() if self.fallback else {"kept_fp32": []}),
            }
        return out


# onnxscript/onnx-ir log every pass at INFO, which shows once anything (ORT's quantizer does) configures the
# root logger; the progress line is the user's view of this step.
@quiet_loggers("onnxscript", "onnx_ir", "onnxruntime", level=logging.WARNING, root=True)
@quiet_loggers(
    "onnxruntime.tools.symbolic_shape_infer", "symbolic_shape_infer"
)  # "Unable to determine if sequence <= ...": the banded blocks' padding
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
    artefact_dir: Path | None = None,
    torch_model: Any = None,
) -> OptimizeResult:
    """Rewrite ``path`` in place: the target's graph passes, then the precision, then fallback.

    A target with an artefact (OpenVINO's IR) leaves the ONNX graph fp32 and writes the artefact, in the
    asked precision, to ``artefact_dir`` (default: its folder beside ``path``)."""
    options.check()
    options, choice = resolve_int8_mode(options, family)
    target = options.target
    result = OptimizeResult(options, mode_choice=choice)
    if options.optimize:
        model, result.banded_layers = target.passes(ir.load(path), family, options, max_seq)
        _save_ir(model, path)
    # calibration text for int8 (and the fallback's sensitivity); an artefact's bf16 is a hint, fp16 is ONNX-only
    calibrate = options.int8 if target.artefact is not None else options.precision != "fp32"
    feeds = (
        calibration_feeds(
            inputs,
            tokenizer,
            samples=options.calib_samples,
            max_seq=min(max_seq, 128),
            vocab_size=vocab_size,
            seed=seed,
        )
        if calibrate
        else []
    )
    if target.artefact is not None:
        out_dir = artefact_dir or path.parent / target.artefact.directory
        torch_args = {"model": torch_model, "inputs": inputs, "max_seq": max_seq} if target.artefact.torch_model else {}
        result.artefact = target.artefact.build(path, out_dir, options, feeds, probe, seed, **torch_args)
        result.fallback = result.artefact.fallback
        _count_ops(path, result)
        return result
    with tempfile.TemporaryDirectory(prefix="bert-export-opt-") as work_dir:
        work = Path(work_dir)
        fp32_path = work / "fp32.onnx"
        shutil.copyfile(path, fp32_path)
        if options.precision != "fp32":
            b = _builder(options, fp32_path, path, work, feeds)
            if probe is not None and options.fallback:
                result.fallback = accuracy_fallback(
                    b.candidates,
                    b.build,
                    probe,
                    b.reference,
                    feeds[:8],
                    rank=b.rank,
                    budget_s=options.fallback_budget,
                    cost=b.cost,
                )
                if options.mode == "dynamic" and options.per_tensor and result.fallback.passed:
                    left = max(options.fallback_budget - result.fallback.seconds, MIN_PER_TENSOR_BUDGET_S)
                    result.granularity = per_tensor_pass(
                        b.reference,
                        path,
                        b.smooth,
                        b.candidates,
                        frozenset(result.fallback.kept),
                        probe,
                        feeds[:8],
                        left,
                    )
            else:
                b.build(frozenset())
    _count_ops(path, result)
    return result


def resolve_int8_mode(options: OptimizeOptions, family: Family) -> tuple[OptimizeOptions, dict[str, Any]]:
    """``--int8`` without ``--int8-mode`` on a target whose default is per family (``Target.int8_default`` None):
    the family's measured fastest mode that passes the gate.

    Measured once per family on full-size models (benchmarks/bench_cpu_int8.py) and stored as data in the
    registry, not timed at export: timing on a shared or different machine at export would make the bundle
    depend on the load of the moment, and each extra mode costs a full quantization plus fallback.
    """
    if not options.int8 or options.target.int8_default is not None:
        return options, {}
    if options.int8_mode is not None:
        return options, {"mode": options.int8_mode, "source": "--int8-mode"}
    import dataclasses

    mode = family.int8_mode
    choice = {
        "mode": mode,
        "source": f"registry: {family.name} default (fastest passing mode, measured)",
        "measured": dict(getattr(family, "int8_measured", {}) or {}),
    }
    return dataclasses.replace(options, int8_mode=mode), choice


def _count_ops(path: Path, result: OptimizeResult) -> None:
    final = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in final.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    result.ops, result.nodes = dict(sorted(counts.items())), len(final.graph.node)
    result.switch = read_switch({p.key: p.value for p in final.metadata_props})
    result.fused_ops = fused_op_counts(ir.from_proto(final))
    result.output_dtype = "float16" if result.options.fp16_io else "float32"


@dataclass
class _Builder:
    """How one precision writes its graph with some nodes kept in fp32, and what the fallback needs
    to search it: the candidates, their sensitivity ranker (None: measured on the built graph), the
    fp32 graph the candidates' names refer to, dynamic int8's SmoothQuant factors (the per-tensor pass
    reuses them), and each candidate's cost (None for fp16, whose candidates are any op)."""

    build: Callable[[frozenset[str]], Path]
    candidates: list[str]
    rank: Any
    reference: Path
    smooth: dict[str, Any] | None = None
    cost: dict[str, float] | None = None


def _builder(options: OptimizeOptions, fp32_path: Path, out: Path, work: Path, feeds: list) -> _Builder:
    """The fp16, dynamic int8 or static int8 builder for ``options``."""
    base = onnx.load(str(fp32_path))
    if options.fp16:

        def build_fp16(keep: frozenset[str]) -> Path:
            onnx.save(fp16_mod.to_fp16(copy.deepcopy(base), io_fp16=options.fp16_io, keep_fp32=keep), str(out))
            return out

        return _Builder(build_fp16, fp16_mod.fp16_candidates(base), None, fp32_path)
    if options.mode == "dynamic":
        unpacked = work / "fp32-unpacked.onnx"
        model = ir.load(fp32_path)
        unpack_attention(model)
        ir.save(model, unpacked)
        smooth = int8_mod.smooth_factors(unpacked, feeds)

        def build_dynamic(keep: frozenset[str]) -> Path:
            int8_mod.quantize_rowwise(unpacked, out, exclude=keep, smooth=smooth)
            return out

        unpacked_model = onnx.load(str(unpacked))
        candidates = int8_mod.quantizable_nodes(unpacked_model)
        return _Builder(
            build_dynamic,
            candidates,
            lambda q: onnx_local_rank(unpacked, candidates, feeds[:8], "rows", smooth)(q),  # only if the gate fails
            unpacked,
            smooth,
            matmul_costs(unpacked_model, candidates),
        )
    cache = work / "calibration.json"
    candidates = int8_mod.quantizable_nodes(base)

    def build_static(keep: frozenset[str]) -> Path:
        int8_mod.quantize_static(fp32_path, out, feeds, cache, symmetric=options.target.int8_symmetric, exclude=keep)
        return out

    return _Builder(
        build_static,
        candidates,
        lambda q: onnx_local_rank(fp32_path, candidates, feeds[:8], "tensor")(q),
        fp32_path,
        cost=matmul_costs(base, candidates),
    )


def per_tensor_pass(
    unpacked: Path,
    out: Path,
    smooth: dict[str, Any] | None,
    int8_nodes: list[str],
    fp32_kept: frozenset[str],
    probe: Callable[[Path], Any],
    feeds: list,
    budget_s: float,
) -> FallbackResult:
    """Dynamic int8, second pass: move the MatMuls that tolerate one activation scale per tensor to ONNX
    Runtime's fused ``DynamicQuantizeMatMul``; the rest keep per-row scales.

    Per-row scales are what make int8 pass the gate on BERT-like activations (outlier tokens), but they
    cost nine small ops around each GEMM. Not every MatMul needs them: the same bounded search as the
    fp32 fallback (``accuracy_fallback``: ranked once by the local error of per-tensor quantization,
    then doubling, bisection and shrinking of the set kept per-row) finds the fewest per-row MatMuls
    that still pass. The fp32 set of the first pass is left alone; if the budget runs out before a
    passing mix is found, every MatMul stays per-row (the first pass's graph, which passed)."""
    candidates = [n for n in int8_nodes if n not in fp32_kept]  # the first pass's candidates (no reload of the graph)

    def build(per_row: frozenset[str]) -> Path:
        int8_mod.quantize_rowwise(
            unpacked, out, exclude=fp32_kept, smooth=smooth, per_tensor=frozenset(candidates) - per_row
        )
        return out

    rank = onnx_local_rank(unpacked, candidates, feeds, "tensor-dynamic", smooth)
    return accuracy_fallback(candidates, build, probe, None, feeds, rank=rank, budget_s=budget_s, kept_label="per-row")


def _save_ir(model: ir.Model, path: Path) -> None:
    data = path.with_name(path.name + ".data")
    big = (
        sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
        > 1_800_000_000
    )
    ir.save(model, path, external_data=data.name if big else None)


def optimize_export(
    path: Path,
    family: Family,
    task: Any,
    outputs: tuple[TensorSpec, ...],
    graph: Any,
    config: Any,
    tokenizer: Any | None,
    max_seq: int,
    seed: int,
    pooling: str,
    options: OptimizeOptions,
    validate: bool,
    artefact_dir: Path | None = None,
    cases: list[Any] | None = None,
    reference: list[Any] | None = None,
) -> OptimizeResult:
    """``optimize_graph`` as the exporter calls it: the parity probe is built here when validating.

    ``cases``/``reference``: the parity cases and their PyTorch outputs when the caller has them
    already (a multi-precision export runs PyTorch once for all its graphs)."""
    probe = None
    if validate and options.precision not in ("fp32", "bf16") and options.fallback:
        from bert_export.quantize.probe import ParityProbe
        from bert_export.runtimes.cases import build_cases

        if cases is None:
            cases, reference = build_cases(family, task, config, tokenizer, max_seq, seed), None
        # the graph's own output types (--fp16-io: float16), which ORT runners check against what they are told
        graph_outputs = tuple(TensorSpec(o.name, "float16", o.axes) for o in outputs) if options.fp16_io else outputs
        runner = None
        artefact = options.target.artefact
        if artefact is not None:  # the fallback tries the artefact on the runner its gate uses

            def runner(p: Path) -> Any:
                return artefact.gate(p, family.inputs, outputs, max_seq, HINTS[options.precision])

        probe = ParityProbe(
            graph,
            family.inputs,
            graph_outputs,
            task,
            cases,
            pooling,
            max_seq,
            options.precision,
            runner=runner,
            reference=reference,
        )
    return optimize_graph(
        path,
        family,
        family.inputs,
        options,
        tokenizer=tokenizer,
        max_seq=max_seq,
        vocab_size=int(config.vocab_size),
        probe=probe,
        seed=seed,
        artefact_dir=artefact_dir,
        torch_model=graph,
    )


def describe(options: OptimizeOptions) -> str:
    """The progress line for the step."""
    target = options.target
    what = ["fusing for " + target.title] if options.optimize else []
    if options.bf16:
        what.append("bf16 (OpenVINO precision hint)")
    if options.fp16:
        what.append("fp16" + (" with fp16 inputs/outputs" if options.fp16_io else ""))
    if options.int8:
        what.append("int8 " + (options.mode or "per-family default mode"))
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
