"""The ExecuTorch target (``--runtime executorch``): a ``.pte`` program for PyTorch's mobile runtime.

    TaskGraph --torch.export (dynamic batch <= MAX_BATCH, sequence <= --max-seq)--> ExportedProgram
      fp32: -> to_edge_transform_and_lower(XNNPACK) -> executorch/model.pte
      int8: -> prepare_pt2e(XNNPACKQuantizer: int8 symmetric, per-channel weights; activations quantized
               per tensor from calibrated ranges (static, the default) or per token at run time (--int8-mode dynamic))
            -> calibrate on our calibration text -> convert_pt2e -> export again -> XNNPACK -> model.pte

Unlike the other targets, the program is built from the PyTorch task model (``Artefact.torch_model``),
not from the ONNX graph; the bundle's ONNX graph stays fp32 beside it (ONNX Runtime users keep it).
The parity gate and the int8 accuracy fallback run the ``.pte`` in ExecuTorch's Python runtime
(runtimes/executorch_runner.py). The int8 fallback keeps the most sensitive ``nn.Linear`` layers in
fp32 (the quantizer annotates only the layers it is told to), ranked by each layer's own simulated
int8 effect on the outputs (``linear_rank``: one eager fake-quantized forward per layer).

ExecuTorch plans memory for the upper bounds of the dynamic dimensions, so the batch is bounded
(``MAX_BATCH``); the runner splits larger batches. ModernBERT's sliding-window layers are what
transformers computes: a dense attention with a banded mask (no blocked kernel: docs/edge.md); its
GLU's ``chunk`` is exported as slices (``splits_as_slices``: the edge verifier would fix the batch).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.bundle.publish import write_atomic
from bert_export.models import BertExportError, TensorSpec
from bert_export.models.support import first_line, quiet_loggers
from bert_export.quantize.fallback import FallbackResult, accuracy_fallback, fake_quant_tensor, fake_quant_weight
from bert_export.quantize.target import Artefact, Target
from bert_export.runtimes.base import Runner
from bert_export.runtimes.executorch_runner import (
    INSTALL_HINT,
    MAX_BATCH,
    PROGRAM,
    SECTION,
    ExecuTorchRunner,
    require_executorch,
)

if TYPE_CHECKING:
    import torch

    from bert_export.quantize.pipeline import OptimizeOptions


def no_passes(model: Any, family: Any, options: OptimizeOptions, max_seq: int) -> tuple[Any, int]:
    """The ONNX graph is left as exported: the program is built from the PyTorch model, not from it."""
    return model, 0


def require_packages(options: OptimizeOptions) -> None:
    require_executorch()
    if options.int8:
        try:
            import torchao.quantization.pt2e  # noqa: F401
        except ImportError:
            raise BertExportError(f"--runtime executorch --int8 needs torchao; {INSTALL_HINT}") from None


# --int8-mode -> the activations' quantization (XNNPACK's dynamic mode quantizes each token's row at run time)
ACTIVATIONS = {"dynamic": "dynamic per-token activations", "static": "static per-tensor activations"}
# Dynamic by default: on the packaged MiniLM it holds the int8 gate with 4 of 37 Linears kept fp32, while static
# per-tensor activations (one calibrated scale for BERT's outlier channels) fail it far (pooled cosine min 0.866).
DEFAULT_MODE = "dynamic"


@dataclass
class ProgramResult:
    """What the ExecuTorch step wrote, for the manifest (``optimization.executorch``)."""

    precision: str
    version: str
    max_seq: int
    path: Path | None = None
    directory: str = SECTION
    hint: str = "f32"
    fallback: FallbackResult | None = None
    kept_fp32: list[str] = field(default_factory=list)
    delegated: int = 0  # XNNPACK-delegated subgraphs
    calib_samples: int = 0
    mode: str = DEFAULT_MODE

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "program": f"{self.directory}/{PROGRAM}",
            "version": self.version,
            "backend": "XNNPACK",
            "precision": self.precision,
            "delegated_subgraphs": self.delegated,
            "max_batch": MAX_BATCH,
            "max_seq": self.max_seq,
        }
        if self.precision == "int8":
            out["int8"] = {
                "quantizer": f"XNNPACKQuantizer (pt2e), int8 symmetric, per-channel weights, {ACTIVATIONS[self.mode]}",
                "mode": self.mode,
                "calib_samples": self.calib_samples,
                "kept_fp32": self.kept_fp32,
            }
        return out


def _kwargs(feed: dict[str, np.ndarray], inputs: Sequence[TensorSpec]) -> dict[str, torch.Tensor]:
    import torch

    return {s.name: torch.from_numpy(np.ascontiguousarray(feed[s.name], dtype=np.int64)) for s in inputs}


def _example(inputs: Sequence[TensorSpec], max_seq: int) -> dict[str, torch.Tensor]:
    """Batch 2 x a middle length (neither 0/1-specialised nor at a bound), token ids 1 and mask 1."""
    import torch

    seq = max(2, min(16, max_seq - 1))
    return {
        s.name: (torch.zeros if s.name == "token_type_ids" else torch.ones)(2, seq, dtype=torch.long) for s in inputs
    }


def export_program(graph: torch.nn.Module, inputs: Sequence[TensorSpec], max_seq: int) -> Any:
    """``torch.export`` with dynamic batch (1..MAX_BATCH) and sequence (1..max_seq) on every input."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("sequence", min=1, max=max_seq)
    example = _example(inputs, max_seq)
    dynamic = {name: {0: batch, 1: seq} for name in example}
    try:
        program = torch.export.export(graph.eval(), (), example, dynamic_shapes=dynamic, strict=False)
    except Exception as exc:
        raise BertExportError(f"torch.export failed for --runtime executorch: {first_line(exc, 300)}") from None
    splits_as_slices(program.graph_module)
    return program


def splits_as_slices(module: Any) -> int:
    """Rewrite ``split``/``split_with_sizes``/``chunk`` (ModernBERT's GLU ``chunk(2, -1)``) as one ``slice``
    per used output; the number rewritten.

    ExecuTorch's edge verifier (executorch 1.5, ``arg_validator``) takes ``len()`` of the *first tensor*
    of an op returning ``Tensor[]``: with a dynamic batch that guards ``batch == example batch`` and
    silently specialises the whole program to the export example's batch of 2 (every other batch then
    fails at run time, first in ``arange.start_out``: "resize a static tensor", error 0x12). Slices
    return one tensor each, so the batch stays dynamic."""
    import operator

    import torch

    aten = torch.ops.aten
    count = 0
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in (
            aten.split.Tensor,
            aten.split_with_sizes.default,
            aten.chunk.default,
        ):
            continue
        source, arg = node.args[0], node.args[1]
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        shape = source.meta["val"].shape
        dim = dim % len(shape)
        if not isinstance(shape[dim], int) or any(u.target is not operator.getitem for u in node.users):
            continue
        if node.target is aten.split_with_sizes.default:
            sizes = list(arg)
        else:
            step = -(-shape[dim] // arg) if node.target is aten.chunk.default else arg
            sizes = [min(step, shape[dim] - start) for start in range(0, shape[dim], step)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for user in list(node.users):
            i = user.args[1]
            with module.graph.inserting_before(user):
                piece = module.graph.call_function(aten.slice.Tensor, (source, dim, starts[i], starts[i] + sizes[i]))
            piece.meta = dict(user.meta)
            user.replace_all_uses_with(piece)
            module.graph.erase_node(user)
        module.graph.erase_node(node)
        count += 1
    if count:
        module.graph.lint()
        module.recompile()
    return count


def integer_scalar_ops_as_scalar(module: Any) -> None:
    """Rewrite ``aten.add/sub.Tensor(int tensor, python number)`` (transformers' mask code adds a 0 offset
    to an ``arange``) so that pt2e's prepare, which turns scalar operands into *float* constants, cannot
    make the index tensor float ("tensors used as indices must be long")."""
    import torch

    aten = torch.ops.aten
    scalar = {aten.add.Tensor: aten.add.Scalar, aten.sub.Tensor: aten.sub.Scalar}
    for node in list(module.graph.nodes):
        if node.op != "call_function" or node.target not in scalar or node.kwargs or len(node.args) != 2:
            continue
        value = getattr(node.args[0], "meta", {}).get("val")
        if value is None or value.dtype.is_floating_point or not isinstance(node.args[1], (int, float)):
            continue
        if node.args[1] == 0:
            node.replace_all_uses_with(node.args[0])
            module.graph.erase_node(node)
        else:
            node.target = scalar[node.target]
    module.graph.lint()
    module.recompile()


def linear_names(graph: torch.nn.Module) -> list[str]:
    import torch

    return [name for name, m in graph.named_modules() if isinstance(m, torch.nn.Linear)]


def quantized_program(
    graph: torch.nn.Module,
    inputs: Sequence[TensorSpec],
    max_seq: int,
    feeds: Sequence[dict[str, np.ndarray]],
    keep: frozenset[str],
    mode: str = "static",
) -> Any:
    """The int8 ExportedProgram: every ``nn.Linear`` but ``keep`` quantized by XNNPACK's pt2e quantizer;
    activations per token at run time (``dynamic``) or per tensor from ranges calibrated on ``feeds``."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = export_program(graph, inputs, max_seq).module()
    integer_scalar_ops_as_scalar(module)
    quantizer = XNNPACKQuantizer()
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=mode == "dynamic")
    for name in linear_names(graph):
        if name not in keep:  # the quantizer takes no "None" per module: annotate only what is quantized
            quantizer.set_module_name(name, config)
    prepared = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for feed in feeds:
            prepared(**_kwargs(feed, inputs))
    converted = convert_pt2e(prepared)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("sequence", min=1, max=max_seq)
    example = _example(inputs, max_seq)
    return torch.export.export(
        converted, (), example, dynamic_shapes={n: {0: batch, 1: seq} for n in example}, strict=False
    )


def lower(program: Any, path: Path) -> int:
    """XNNPACK-lower ``program`` and write the ``.pte`` through the bundle writer; the delegated subgraphs."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        delegated = sum(
            1 for n in edge.exported_program().graph.nodes if n.op == "call_function" and "delegate" in str(n.target)
        )
        buffer = edge.to_executorch().buffer
    except Exception as exc:
        raise BertExportError(f"ExecuTorch could not lower the model to XNNPACK: {first_line(exc, 300)}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, bytes(buffer))
    return delegated


def linear_rank(
    graph: torch.nn.Module, inputs: Sequence[TensorSpec], feeds: Sequence[dict[str, np.ndarray]], mode: str
) -> dict[str, float]:
    """Each Linear's effect on the *outputs* when it alone is int8 (fake-quantized in eager PyTorch with the
    fallback's own int8 grids: per-channel symmetric weights; activations over the calibrated range, or each
    input's own range when dynamic).

    Why not ``quantize.fallback.local_errors`` (the ONNX targets' ranking, each layer's error on its own
    output): a layer's local error says nothing of how much of it reaches the outputs. On MiniLM it ranked the
    last layer's FFN-down 37th of 37, the layer whose error reaches the embedding unattenuated, so the search
    kept every Linear (an fp32 program after 412 s). One eager forward per Linear and feed ranks them by what
    the gate measures, at a small fraction of one ExecuTorch build."""
    import torch

    linears = {name: m for name, m in graph.named_modules() if isinstance(m, torch.nn.Linear)}
    batches = [_kwargs(feed, inputs) for feed in feeds]
    ranges: dict[str, list[float]] = {}

    def observe(name: str) -> Any:
        def hook(_m: Any, args: tuple[Any, ...]) -> None:
            lo, hi = ranges.setdefault(name, [0.0, 0.0])
            ranges[name] = [min(lo, float(args[0].min())), max(hi, float(args[0].max()))]

        return hook

    def outputs() -> list[torch.Tensor]:
        with torch.no_grad():
            return [torch.cat([t.flatten() for t in _tensors(graph(**batch))]) for batch in batches]

    hooks = [m.register_forward_pre_hook(observe(name)) for name, m in linears.items()]
    try:
        reference = outputs()
    finally:
        for h in hooks:
            h.remove()

    def fake_quant_input(lo: float, hi: float) -> Any:
        """The Linear's input on the int8 grid: the calibrated range (static) or the input's own (dynamic)."""

        def hook(_m: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0].detach().numpy()
            lo_, hi_ = (float(x.min()), float(x.max())) if mode == "dynamic" else (lo, hi)
            return (torch.from_numpy(fake_quant_tensor(x, lo_, hi_).astype(x.dtype)), *args[1:])

        return hook

    den = sum(float(r.square().sum()) for r in reference)
    scores = {}
    for name, m in linears.items():
        weight = m.weight.data  # [out, in]; fake_quant_weight takes [in, out] (a scale per output channel)
        m.weight.data = torch.from_numpy(fake_quant_weight(weight.numpy().T).T.astype(weight.numpy().dtype))
        hook = m.register_forward_pre_hook(fake_quant_input(*ranges.get(name, [0.0, 0.0])))
        try:
            got = outputs()
        finally:
            hook.remove()
            m.weight.data = weight
        num = sum(float((g - r).square().sum()) for g, r in zip(got, reference))
        scores[name] = (num / max(den, 1e-24)) ** 0.5
    return scores


def _tensors(out: Any) -> list[torch.Tensor]:
    """The graph's output tensors, whatever container it returns them in."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out.float()]
    values = out.values() if isinstance(out, dict) else out
    return [t.float() for t in values if isinstance(t, torch.Tensor)]


@quiet_loggers("executorch", "torch._export", "torchao", level=logging.ERROR, root=True)
def build(
    onnx_path: Path,
    out_dir: Path,
    options: OptimizeOptions,
    feeds: list[dict[str, np.ndarray]],
    probe: Any | None,
    seed: int,
    *,
    model: Any,
    inputs: Sequence[TensorSpec],
    max_seq: int,
) -> ProgramResult:
    """``out_dir/model.pte`` in ``options.precision`` (fp32 or int8, the latter held to the gate by the fallback)."""
    from importlib.metadata import version as package_version

    path = out_dir / PROGRAM
    version = package_version("executorch")
    result = ProgramResult(options.precision, str(version), max_seq, path=path, directory=out_dir.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not options.int8:
            result.delegated = lower(export_program(model, inputs, max_seq), path)
            return result
        result.hint, result.mode = "int8", options.mode or DEFAULT_MODE
        result.calib_samples = len(feeds) if result.mode == "static" else 0

        def build_int8(keep: frozenset[str]) -> Path:
            program = quantized_program(model, inputs, max_seq, feeds, keep, result.mode)
            result.delegated = lower(program, path)
            return path

        if probe is not None and options.fallback:
            rank_feeds = feeds[:8]
            result.fallback = accuracy_fallback(
                linear_names(model),
                build_int8,
                probe,
                None,
                rank_feeds,
                rank=lambda _p: linear_rank(model, inputs, rank_feeds, result.mode),
                budget_s=options.fallback_budget,
            )
            result.kept_fp32 = list(result.fallback.kept)
        else:
            build_int8(frozenset())
    return result


def gate_runner(
    path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_seq: int, hint: str
) -> Runner:
    """The ``.pte`` in ExecuTorch's Python runtime (XNNPACK on the CPU)."""
    return ExecuTorchRunner(path, inputs, outputs, max_seq)


def int8_record(options: OptimizeOptions) -> dict[str, Any]:
    return {
        "mode": options.mode or DEFAULT_MODE,
        "calib_samples": options.calib_samples if options.mode == "static" else 0,
        "kernel": "XNNPACK int8 (QDQ from XNNPACKQuantizer, per-channel weights)",
    }


TARGET = Target(
    name="executorch",
    title="ExecuTorch (torch.export, XNNPACK)",
    help="executorch adds an ExecuTorch program (executorch/model.pte, XNNPACK) beside the ONNX graph "
    "(needs the executorch extra)",
    passes=no_passes,
    precisions=("fp32", "int8"),
    lacks={
        "fp16": "its XNNPACK program is exported in fp32 or int8 only here",
        "bf16": "XNNPACK has no bf16 path",
    },
    int8_modes=("dynamic", "static"),
    int8_default="dynamic",
    int8_note="ExecuTorch quantizes with XNNPACK's pt2e quantizer (per-token dynamic, or static calibrated)",
    int8_record=int8_record,
    artefact=Artefact(SECTION, build, gate_runner, torch_model=True),
    long_inputs=False,
    require=require_packages,
)
