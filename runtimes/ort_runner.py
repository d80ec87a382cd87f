"""ONNX Runtime runner (CPU provider; the GPU providers build on the same class)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bert_export.models import BertExportError, TensorSpec

from .base import Outputs, Runner


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
    ) -> None:
        super().__init__(inputs, outputs, max_seq)
        self.model_path = Path(model_path)
        self.providers = tuple(providers)
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.session: ort.InferenceSession | None = None

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
        try:
            self.session = ort.InferenceSession(str(self.model_path), self.session_options(), providers=list(self.providers))
        except Exception as exc:  # ORT raises several unrelated types for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BertExportError(f"ONNX Runtime could not load {self.model_path}: {first}; re-export the bundle") from None

    def _deactivate(self) -> None:
        self.session = None

    @property
    def active_providers(self) -> list[str]:
        return self.session.get_providers() if self.session else []

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        assert self.session is not None
        values = self.session.run(list(self.output_names), feed)
        return {name: np.asarray(v) for name, v in zip(self.output_names, values)}
