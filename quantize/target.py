"""What a target is: the runtime a bundle is optimized for at export (``--runtime`` of the family commands).

A target is one ``Target`` entry in its own module (``quantize/target_<name>.py``), collected by
``quantize/targets.py``. The entry states everything the exporter needs to know about it, and
nothing outside the target's module names it:

- ``passes``: the graph rewrites it gets (ONNX Runtime's fused ops, or standard ONNX for engines
  that fuse by themselves);
- ``precisions`` it exports, and for the others why not (``lacks``: the refusal's reason);
- its int8 modes (``int8_modes``, ``int8_default``; ``None`` = the family's measured mode,
  ``Family.int8_mode``): the one place the default int8 mode is decided;
- ``artefact``: a model it writes beside the ONNX graph (OpenVINO's IR), how it is built, and
  which runner its parity gate (and accuracy fallback) runs it on; without one the ONNX graph
  is gated in ONNX Runtime on the CPU;
- ``graph_format``: a file format the gated ONNX graph is converted to, which then *is* the bundle's
  graph (ONNX Runtime's ``.ort`` for reduced mobile builds), and the runner its gate uses;
- ``long_inputs``: whether its default ``--max-seq`` may be a local-window family's own maximum.

The runtimes that *run* a bundle (``--runtime`` of run/validate/bench/serve) are another registry,
one level down (``runtimes/factory.py``): a target's artefact names the runner it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import onnx_ir as ir

from bert_export.models import Family, TensorSpec
from bert_export.quantize.banded_attention import banded_standard_attention
from bert_export.quantize.fusion import fold_for_trt
from bert_export.quantize.sdpa_guard import drop_softmax_nan_guards
from bert_export.runtimes.base import Runner

if TYPE_CHECKING:
    from bert_export.quantize.pipeline import OptimizeOptions

# (model, family, options, max_seq) -> (the rewritten model, the number of banded local-attention layers)
Passes = Callable[[ir.Model, Family, "OptimizeOptions", int], tuple[ir.Model, int]]
# (model file, inputs, outputs, max_seq, OpenVINO-style precision hint) -> the runner its gate uses
GateRunner = Callable[[Path, Sequence[TensorSpec], Sequence[TensorSpec], int, str], Runner]


class ArtefactRecord(Protocol):
    """What an artefact's build returns: its manifest record and what the gate needs."""

    path: Path | None  # the model file the gate runs
    hint: str  # the precision hint it ships with
    fallback: Any  # quantize.fallback.FallbackResult, or None

    def to_manifest(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Artefact:
    """A model the target writes beside the ONNX graph, in the bundle folder ``directory``
    (``<directory>-<precision>`` in a multi-precision bundle); its record goes to
    ``manifest["optimization"][<target name>]``."""

    directory: str
    # (fusion-rewritten ONNX graph, out_dir, options, calibration feeds, parity probe or None, seed) -> record
    build: Callable[..., ArtefactRecord]
    gate: GateRunner
    # build takes the PyTorch task model too (model=, inputs=, max_seq=): a torch.export target (ExecuTorch)
    torch_model: bool = False


class ConvertedGraph(Protocol):
    """What a graph format's ``convert`` returns: the converted graph and the files written beside it."""

    path: Path  # the converted graph (the bundle's graph file once placed)
    extras: dict[str, Path]  # name suffix (``.required_operators.config``) -> a file that ships beside the graph

    def to_manifest(self, names: dict[str, str]) -> dict[str, Any]: ...  # graph-record entries; names: suffix -> rel


@dataclass(frozen=True)
class GraphFormat:
    """The graph, after its precision step, converted to another file format that becomes the bundle's graph
    (``onnx/model<precision suffix><suffix>``); the parity gate runs the converted file on ``gate``."""

    suffix: str  # ".ort"
    title: str  # the progress line: "converting the graph to <title>"
    convert: Callable[[Path, Path], ConvertedGraph]  # (the optimized ONNX graph, a work directory) -> converted
    gate: GateRunner


@dataclass(frozen=True)
class Target:
    name: str  # --runtime at export; manifest["runtime"] and optimization.target
    title: str  # the progress line: "fusing for <title>"
    help: str  # the --runtime help: what the bundle gets
    passes: Passes
    precisions: tuple[str, ...]  # what --fp16/--int8/--bf16 it exports (fp32: always)
    lacks: dict[str, str] = field(default_factory=dict)  # precision -> why this target has none
    int8_modes: tuple[str, ...] = ()  # the --int8-mode values it takes
    int8_default: str | None = None  # --int8 without --int8-mode; None: the family's measured mode
    int8_note: str = ""  # why only int8_modes (the refusal's reason)
    int8_symmetric: bool = False  # static int8: symmetric activations (TensorRT's QDQ)
    int8_record: Callable[[OptimizeOptions], dict[str, Any]] | None = None  # the manifest's int8 entry, if its own
    artefact: Artefact | None = None
    graph_format: GraphFormat | None = None  # the bundle's graph in another format (converted after the precision)
    long_inputs: bool = False  # default --max-seq may be a local-window family's maximum (memory-light attention)
    require: Callable[[OptimizeOptions], None] | None = None  # optional packages, checked before any work


def standard_onnx_passes(
    model: ir.Model, family: Family, options: OptimizeOptions, max_seq: int
) -> tuple[ir.Model, int]:
    """For targets that fuse by themselves (standard ONNX): constants folded, local layers banded, then the
    dead NaN guards dropped so that the target's own attention fusion sees a plain softmax chain."""
    model = fold_for_trt(model)
    banded = (
        banded_standard_attention(model, switch=options.length_switch)
        if options.banded_attention and family.fusions.banded_local_attention
        else 0
    )
    drop_softmax_nan_guards(model)
    return model, banded
