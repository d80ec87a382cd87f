"""Trace a task model to ONNX with dynamic ``batch`` and ``sequence`` axes, then check it.

Why the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) and not TorchScript: on
transformers 5.x, TorchScript tracing bakes the example's sequence length into BERT's SDPA
mask (outputs are off by 0.02-0.19 at any other length, silently), while ``torch.export``
traces the mask arithmetic symbolically and matches PyTorch to ~1e-6 at every shape, including
ModernBERT's sliding-window masks past the local window. Its graphs are plain opset-18 ONNX
(MatMul / Softmax / LayerNormalization) that ONNX Runtime's fusions and TensorRT's parser read.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
import torch

from bert_export.models import BATCH, SEQUENCE, BertExportError, TensorSpec
from bert_export.models.support import first_line, quiet_loggers
from bert_export.runtimes.torch_runner import TaskGraph

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# Protobuf cannot hold a message over 2 GiB; stay clear of it with headroom for the graph.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


@dataclass(frozen=True)
class ExportedGraph:
    path: Path
    files: tuple[str, ...]
    opset: int
    op_counts: dict[str, int]
    num_nodes: int


def example_inputs(inputs: tuple[TensorSpec, ...], seq: int, vocab: int) -> dict[str, torch.Tensor]:
    """Batch 2 and an odd length: dims of 0/1 or two equal dims would be specialised by torch.export."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, max(6, vocab), (2, seq), generator=g)
    mask = torch.ones(2, seq, dtype=torch.int64)
    mask[1, seq // 2 :] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(2, seq, dtype=torch.int64)}
    return {spec.name: feed[spec.name] for spec in inputs}


def example_length(max_seq: int, window: int | None) -> int:
    """Past the local window when there is one (so its masking is traced), odd, within max_seq."""
    seq = 2 * window + 3 if window else 13
    seq = min(seq, max_seq)
    return seq if seq > 2 else max_seq


def export_onnx(
    graph: TaskGraph,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    out_dir: Path,
    *,
    opset: int,
    example_seq: int,
    vocab_size: int,
) -> ExportedGraph:
    """Export ``graph`` into ``out_dir/model.onnx`` (plus ``model.onnx.data`` when large) and check it."""
    if opset < 18:
        raise BertExportError(f"--opset {opset} is too old; the dynamo exporter needs opset 18 or newer")
    feed = example_inputs(inputs, example_seq, vocab_size)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: seq} for name in feed}
    graph.eval()
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (),
                kwargs=feed,
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=dynamic,
                input_names=list(feed),
                output_names=[o.name for o in outputs],
                optimize=True,
                verbose=False,
            )
    except Exception as exc:
        raise BertExportError(
            f"torch.onnx export failed: {first_line(exc)}; try another --opset or report a bug"
        ) from None
    if program is None:  # torch.onnx.export returns None only for the legacy TorchScript path, never used here
        raise BertExportError("torch.onnx export returned no program; report a bug")
    model = program.model
    _name_dynamic_dims(model, inputs, outputs)
    path = out_dir / MODEL_FILE
    external = (
        sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)
        > EXTERNAL_DATA_THRESHOLD
    )
    ir.save(model, path, external_data=DATA_FILE if external else None)
    check_graph(path)
    counts = Counter(node.op_type for node in model.graph.all_nodes())
    files = (MODEL_FILE, DATA_FILE) if external else (MODEL_FILE,)
    return ExportedGraph(path, files, opset, dict(sorted(counts.items())), sum(counts.values()))


def _name_dynamic_dims(model: ir.Model, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
    """Give every batch/sequence dim its registry name (torch.export emits s0/s1 and expressions)."""
    specs = {s.name: s for s in (*inputs, *outputs)}
    for value in (*model.graph.inputs, *model.graph.outputs):
        spec = specs.get(value.name or "")
        if spec is None or value.shape is None:
            continue
        dims: list[int | ir.SymbolicDim] = []
        for axis, current in zip(spec.axes, value.shape):
            if axis in (BATCH, SEQUENCE):
                dims.append(ir.SymbolicDim(axis))
            else:
                dims.append(current)
        value.shape = ir.Shape(dims)


def check_graph(path: Path) -> None:
    """ONNX checker with full (strict) shape inference; works on external-data models via the path."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise BertExportError(f"exported graph failed the ONNX checker: {first_line(exc)}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export prints pages of progress and warnings; ours is the rich status line."""
    with (
        quiet_loggers("torch.onnx", "torch.export", "torch._dynamo", "onnxscript"),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield
