"""ONNX Runtime runner: CPU, CUDA and TensorRT execution providers behind one class.

The runtime name (``ort``, ``ort-cuda``, ``ort-trt``) picks a provider order (providers.py);
what the session really got is recorded in ``provider_report()``, because ONNX Runtime falls
back to the CPU without raising. On CUDA, outputs are bound on the device (IO binding) so
each result crosses to the host once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from bert_export.models import BertExportError, TensorSpec
from bert_export.models.support import first_line
from bert_export.runtimes.base import Outputs, Runner, Runtime
from bert_export.runtimes.ort_telemetry import quiet_session_events
from bert_export.runtimes.providers import (
    CUDA,
    GPU_PROVIDERS,
    ORT_RUNTIMES,
    ORT_SUMMARIES,
    TRT,
    ProviderPlan,
    plan_providers,
    settle,
)

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle


class OrtRunner(Runner):
    """Runs an ONNX file through an ``onnxruntime.InferenceSession``."""

    name = "ort"

    def __init__(
        self,
        model_path: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_seq: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: int | None = None,
        graph_optimization: str = "all",
        *,
        runtime: str | None = None,
        strict: bool = False,
        provider_options: dict[str, dict[str, str]] | None = None,
        io_binding: bool = True,
    ) -> None:
        """``runtime`` (ort | ort-cuda | ort-trt) overrides ``providers`` with that runtime's
        order minus what cannot run here; ``strict`` refuses any fallback instead of noting it."""
        super().__init__(inputs, outputs, max_seq)
        self.model_path = Path(model_path)
        self.providers = tuple(providers)
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.runtime = runtime
        self.strict = strict
        self.provider_options = provider_options or {}
        self.io_binding = io_binding
        self.plan: ProviderPlan | None = None
        self.session: ort.InferenceSession | None = None
        if runtime is not None:
            self.name = runtime

    def session_options(self) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        return opts

    def _activate(self) -> None:
        if self.runtime is not None:
            self.plan = plan_providers(self.runtime, strict=self.strict)
            providers = list(self.plan.planned)
        else:
            providers = list(self.providers)
        with_options = [(p, self.provider_options[p]) if p in self.provider_options else p for p in providers]
        quiet_session_events()  # ONNX Runtime telemetry stays off (ort_telemetry.py)
        try:
            self.session = ort.InferenceSession(str(self.model_path), self.session_options(), providers=with_options)
        except Exception as exc:  # ORT raises several unrelated types for a bad file
            raise BertExportError(
                f"ONNX Runtime could not load {self.model_path}: {first_line(exc)}; re-export the bundle"
            ) from None
        self._check_signature()
        if self.plan is not None:
            settle(self.plan, self.session.get_providers(), self.strict)

    def _check_signature(self) -> None:
        """The graph must take exactly the inputs the manifest lists and produce its outputs, with the
        listed dtypes: a manifest that disagrees with its graph is refused, not fed."""
        assert self.session is not None
        got_in = {i.name: i.type for i in self.session.get_inputs()}
        got_out = {o.name: o.type for o in self.session.get_outputs()}
        ort_type = {"float32": "tensor(float)"}
        want_in = {s.name: ort_type.get(s.dtype, f"tensor({s.dtype})") for s in self.inputs}
        missing = [s.name for s in self.outputs if got_out.get(s.name) != ort_type.get(s.dtype, f"tensor({s.dtype})")]
        if got_in != want_in or missing:
            what = f"inputs {sorted(got_in)}" if got_in != want_in else f"output {missing[0]}"
            self.session = None
            raise BertExportError(
                f"{self.model_path.name} does not match its manifest ({what} differ from what the manifest lists); "
                "re-export the bundle"
            )

    def provider_report(self) -> dict[str, object]:
        """Which providers were asked for and which the session actually runs on (after activate)."""
        if self.plan is not None:
            return self.plan.report()
        active = self.active_providers
        return {
            "runtime": self.name,
            "requested": list(self.providers),
            "active": active,
            "fallback": bool(active) and active[0] != self.providers[0],
            "notes": [],
        }

    def _deactivate(self) -> None:
        self.session = None

    @property
    def active_providers(self) -> list[str]:
        return self.session.get_providers() if self.session else []

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        assert self.session is not None
        if self.io_binding and self.active_providers and self.active_providers[0] in (CUDA, TRT):
            return self._infer_bound(feed)
        try:
            values = self.session.run(list(self.output_names), feed)
        except Exception as exc:  # ORT's own error types: out-of-range ids, shapes the graph cannot take
            raise BertExportError(
                f"ONNX Runtime failed on this input ({first_line(exc, 160)}); check the ids and shapes fed to {self.model_path.name}"
            ) from None
        return {name: np.asarray(v) for name, v in zip(self.output_names, values)}

    def _infer_bound(self, feed: dict[str, np.ndarray]) -> Outputs:
        """IO binding: inputs copied to the GPU once, outputs left there by ONNX Runtime and copied
        back once, instead of the per-call host staging ``session.run`` does."""
        assert self.session is not None
        binding = self.session.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        return {name: np.asarray(v) for name, v in zip(self.output_names, values)}


def _from_bundle(runtime: str) -> Callable[..., Runner]:
    """A bundle's graph on ``runtime``'s providers (falling back, and saying so, where they cannot run)."""

    def build(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
        provider_options = {}
        if TRT in ORT_RUNTIMES[runtime]:  # the TensorRT provider: the bundle's profile and ORT's engine cache
            from bert_export.runtimes.trt_build import ort_trt_options, resolve_profile

            provider_options = ort_trt_options(bundle, resolve_profile(bundle, options.get("trt_profile")))
        return OrtRunner(
            bundle.model_path,
            bundle.inputs,
            bundle.outputs,
            bundle.max_seq,
            threads=threads,
            graph_optimization=options.get("graph_optimization", "all"),
            runtime=runtime,
            strict=bool(options.get("strict")),
            provider_options=provider_options,
        )

    return build


# The runtime names ONNX Runtime runs as (runtimes/factory.py collects every runner module's).
RUNTIMES = tuple(
    Runtime(
        name,
        ORT_SUMMARIES[name],
        _from_bundle(name),
        gpu=any(p in GPU_PROVIDERS for p in providers),
        concurrent_infer=not any(p in GPU_PROVIDERS for p in providers),  # CPU sessions: run() is thread-safe
    )
    for name, providers in ORT_RUNTIMES.items()
)
