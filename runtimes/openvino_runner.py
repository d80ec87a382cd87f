"""OpenVINO runner (CPU): the bundle's OpenVINO IR, or its ONNX graph read by OpenVINO's frontend.

The precision OpenVINO computes in is a *hint* on the compiled model, not a property of the
file: on CPUs with AVX512-BF16 or AMX OpenVINO defaults to bf16, which fails an fp32 gate. So
the runner always sets ``INFERENCE_PRECISION_HINT`` from the bundle's manifest (``f32`` unless
the bundle was exported as ``bf16``) and reports what the compiled model really uses.

``--runtime openvino-static`` compiles one copy of the model per input shape (the last
``STATIC_SHAPES`` shapes are kept). OpenVINO's CPU kernels for dynamic shapes re-derive shapes
and blocking on every call, and a static sequence length lets it resolve ModernBERT's
length-switch ``If`` at compile time: b1 s128, int8, AMD Zen 4 (benchmarks/cpu_int8.md) 46.0 vs
51.6 ms on ModernBERT-base, 35.6 vs 38.1 ms on BERT-base. Each new shape costs a compile (about
a second for a base model) and a copy of the weights in memory, so it is a runtime of its own,
for traffic of fixed shapes (inputs padded to one length, fixed batches), not the default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.models import BertExportError, TensorSpec
from bert_export.models.precisions import HINTS
from bert_export.models.support import first_line
from bert_export.runtimes.base import Outputs, Runner, Runtime

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

INSTALL_HINT = "install the OpenVINO extra: pip install 'bert-export[openvino]'"
SECTION = "openvino"  # manifest["optimization"][SECTION]: the IR an OpenVINO-target export wrote (quantize/openvino.py)
STATIC_SHAPES = 4  # openvino-static: compiled shapes kept (each holds its own copy of the weights)


def require_openvino() -> Any:
    """The ``openvino`` module, or one clear error naming the extra."""
    try:
        import openvino
    except ImportError:
        raise BertExportError(f"--runtime openvino needs the openvino package; {INSTALL_HINT}") from None
    return openvino


class OpenVinoRunner(Runner):
    """Compiles an OpenVINO IR (``.xml`` + ``.bin``) or an ONNX file for the CPU and runs it."""

    name = "openvino"

    def __init__(
        self,
        model_path: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_seq: int | None = None,
        *,
        threads: int | None = None,
        precision_hint: str = "f32",
        device: str = "CPU",
        weights_path: str | Path | None = None,
        latency: bool = True,
        perf_count: bool = False,
        static_shapes: int = 0,
    ) -> None:
        super().__init__(inputs, outputs, max_seq)
        self.model_path, self.weights_path = Path(model_path), weights_path
        self.threads, self.precision_hint, self.device = threads, precision_hint, device
        self.latency, self.perf_count = latency, perf_count
        self.static_shapes = static_shapes  # > 0: compile per input shape, keep this many (most recent)
        if static_shapes:
            self.name = "openvino-static"  # what reports and errors call it
        self.compiled: Any = None
        self.request: Any = None
        self.model: Any = None
        self.by_shape: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()

    def config(self) -> dict[str, str]:
        cfg = {
            "INFERENCE_PRECISION_HINT": self.precision_hint,
            "PERFORMANCE_HINT": "LATENCY" if self.latency else "THROUGHPUT",
        }
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = str(self.threads)
        if self.perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def _activate(self) -> None:
        ov = require_openvino()
        core = ov.Core()
        try:
            if self.weights_path is not None:
                model = core.read_model(str(self.model_path), str(self.weights_path))
            else:
                model = core.read_model(str(self.model_path))
            self.compiled = core.compile_model(model, self.device, self.config())
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line C++ messages
            raise BertExportError(
                f"OpenVINO could not load {self.model_path.name}: {first_line(exc, 300)}; re-export the bundle"
            ) from None
        names = {n for port in self.compiled.outputs for n in port.get_names()}
        missing = [o for o in self.output_names if o not in names]
        takes = sorted(n for port in self.compiled.inputs for n in port.get_names())
        if missing or takes != sorted(s.name for s in self.inputs):
            self.compiled = None
            what = f"outputs {missing}" if missing else f"inputs {takes}"
            raise BertExportError(
                f"OpenVINO model {self.model_path.name} does not match its manifest ({what} differ from "
                "what the manifest lists); re-export the bundle"
            )
        self.request = self.compiled.create_infer_request()
        self.model = model if self.static_shapes else None

    def _deactivate(self) -> None:
        self.request = self.compiled = self.model = None
        self.by_shape.clear()

    def _for_shape(self, feed: dict[str, np.ndarray]) -> tuple[Any, Any]:
        """The model compiled for this feed's exact shapes (compiled on first sight, least recent dropped)."""
        key = tuple(sorted((name, array.shape) for name, array in feed.items()))
        if key in self.by_shape:
            self.by_shape.move_to_end(key)
            return self.by_shape[key]
        ov = require_openvino()
        model = self.model.clone()
        model.reshape({name: ov.PartialShape(list(array.shape)) for name, array in feed.items()})
        compiled = ov.Core().compile_model(model, self.device, self.config())
        self.by_shape[key] = (compiled, compiled.create_infer_request())
        while len(self.by_shape) > self.static_shapes:
            self.by_shape.popitem(last=False)
        return self.by_shape[key]

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        compiled, request = self._for_shape(feed) if self.static_shapes else (self.compiled, self.request)
        result = request.infer(feed, share_inputs=True)
        by_name = {n: result[port] for port in compiled.outputs for n in port.get_names()}
        return {name: np.array(by_name[name], dtype=np.float32) for name in self.output_names}

    def provider_report(self) -> dict[str, Any]:
        """What OpenVINO compiled for: device, the precision it really computes in, threads."""
        report: dict[str, Any] = {"runtime": self.name, "device": self.device, "precision_hint": self.precision_hint}
        if self.compiled is not None:
            for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS"):
                try:
                    value = self.compiled.get_property(key)
                    report[key.lower()] = value.to_string() if hasattr(value, "to_string") else str(value)
                except Exception:
                    pass
        return report

    def perf_counters(self) -> list[dict[str, Any]]:
        """Per-op profile of the last inference (needs ``perf_count=True``)."""
        out = []
        for p in self.request.get_profiling_info():
            out.append(
                {
                    "name": p.node_name,
                    "type": p.node_type,
                    "exec_type": p.exec_type,
                    "us": p.real_time.total_seconds() * 1e6,
                    "status": str(p.status),
                }
            )
        return out


def from_bundle(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    """The bundle's OpenVINO IR when it has one (--runtime openvino exports), else its ONNX graph read by
    OpenVINO; the precision hint comes from the manifest (f32 unless the bundle is bf16), or ``precision_hint``."""
    require_openvino()
    section = (bundle.manifest.get("optimization") or {}).get(SECTION)
    hint = options.get("precision_hint") or HINTS.get(bundle.precision, "f32")
    static = int(options.get("static_shapes") or 0)
    if isinstance(section, dict) and isinstance(section.get("ir"), str) and isinstance(section.get("weights"), str):
        hint = options.get("precision_hint") or str(section.get("precision_hint", hint))
        if hint not in set(HINTS.values()):
            raise BertExportError(f"bundle {bundle.path}: unknown OpenVINO precision hint {hint!r}; re-export it")
        return OpenVinoRunner(
            bundle.file(section["ir"]),
            bundle.inputs,
            bundle.outputs,
            bundle.max_seq,
            threads=threads,
            precision_hint=hint,
            weights_path=bundle.file(section["weights"]),
            static_shapes=static,
        )
    return OpenVinoRunner(
        bundle.model_path,
        bundle.inputs,
        bundle.outputs,
        bundle.max_seq,
        threads=threads,
        precision_hint=hint,
        static_shapes=static,
    )


# The runtime names OpenVINO runs as (runtimes/factory.py collects every runner module's).
RUNTIMES = (
    Runtime(OpenVinoRunner.name, "OpenVINO, CPU", from_bundle),
    Runtime(
        "openvino-static",
        "OpenVINO, CPU, compiled per input shape: for fixed-shape traffic",
        partial(from_bundle, static_shapes=STATIC_SHAPES),
    ),
)
