"""The ORT-format runner (``--runtime ort-mobile`` of run/validate/bench/serve): a bundle's ``.ort`` graph in
ONNX Runtime on the CPU.

An ``--runtime ort-mobile`` export's graph is ONNX Runtime's flatbuffer format (quantize/target_ort_mobile.py),
which is what a minimal/reduced mobile build loads. This is the ONNX Runtime runner on that file with the
optimizer off: an ``.ort`` carries its optimizations already, and a minimal build applies none at load, so
what runs here is the graph a phone runs. (``--runtime ort`` also opens ``.ort`` bundles; this name refuses
a bundle whose graph is not ORT format, so a check of "the mobile file" never silently runs an ``.onnx``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import BertExportError, TensorSpec
from bert_export.runtimes.base import Runner, Runtime
from bert_export.runtimes.ort_runner import OrtRunner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

ORT_SUFFIX = ".ort"  # the bundle's graph file in ORT format (bundle/reader.py checks it as one)


class OrtMobileRunner(OrtRunner):
    """``OrtRunner`` on an ORT-format file, CPU provider, no optimizer at load."""

    name = "ort-mobile"

    def __init__(
        self,
        model_path: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_seq: int | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(model_path, inputs, outputs, max_seq, threads=threads, graph_optimization="none")


def from_bundle(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    """The bundle's selected graph when it is an ``.ort`` file; else a one-line refusal naming the fix."""
    rel = str(bundle.graph["file"])
    if not rel.endswith(ORT_SUFFIX):
        raise BertExportError(
            f"bundle {bundle.path}: its {bundle.precision} graph {rel} is not ORT format; export with "
            f"--runtime {OrtMobileRunner.name} for an {ORT_SUFFIX} graph, or run this bundle with --runtime ort"
        )
    return OrtMobileRunner(bundle.model_path, bundle.inputs, bundle.outputs, bundle.max_seq, threads=threads)


# The runtime name the ORT-format graph runs as (runtimes/factory.py collects every runner module's).
RUNTIMES = (
    Runtime(
        OrtMobileRunner.name,
        "ONNX Runtime, CPU, the bundle's ORT-format (.ort) graph",
        from_bundle,
        concurrent_infer=True,  # a CPU InferenceSession, as for ort: serve's instances need not take turns
    ),
)
