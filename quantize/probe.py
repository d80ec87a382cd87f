"""The parity gate as a function of a graph file, for the fallback's search.

Runs PyTorch once (the reference does not change while the fallback tries graphs) and each
candidate graph through the same ``OrtRunner`` and ``compare`` the final check uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import Task, TensorSpec
from bert_export.runtimes.base import Runner
from bert_export.runtimes.cases import Case
from bert_export.runtimes.ort_runner import OrtRunner
from bert_export.runtimes.parity import Report, compare
from bert_export.runtimes.torch_runner import TaskGraph, TorchRunner


class ParityProbe:
    def __init__(
        self,
        graph: TaskGraph,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        task: Task,
        cases: list[Case],
        pooling: str,
        max_seq: int,
        precision: str,
        runner: Callable[[Path], Runner] | None = None,
        reference: list[dict[str, np.ndarray]] | None = None,
    ) -> None:
        """``runner``: how a candidate file is run (default: ONNX Runtime on the CPU; OpenVINO for its IR).
        ``reference``: PyTorch's outputs when the exporter has them (one reference per bundle)."""
        self.graph, self.inputs, self.outputs, self.task = graph, inputs, outputs, task
        self.runner = runner or (lambda p: OrtRunner(p, self.inputs, self.outputs, self.max_seq))
        self.cases, self.pooling, self.max_seq, self.precision = cases, pooling, max_seq, precision
        # The exporter passes the PyTorch outputs it already has (one reference per bundle, however many precisions).
        self._reference: list[dict[str, np.ndarray]] | None = reference

    def with_runner(self, runner: Callable[[Path], Runner]) -> ParityProbe:
        """The same gate (same cases, same PyTorch reference, computed once) run through another runner."""
        other = ParityProbe(
            self.graph,
            self.inputs,
            self.outputs,
            self.task,
            self.cases,
            self.pooling,
            self.max_seq,
            self.precision,
            runner=runner,
        )
        other._reference = self.reference
        return other

    @property
    def reference(self) -> list[dict[str, np.ndarray]]:
        if self._reference is None:
            with TorchRunner(self.graph, self.inputs, self.outputs, self.max_seq) as runner:
                self._reference = [runner.infer(self._feed(c)) for c in self.cases]
        return self._reference

    def _feed(self, case: Case) -> dict[str, Any]:
        return {s.name: case.feed[s.name] for s in self.inputs}

    def __call__(self, path: Path) -> Report:
        reference = self.reference
        with self.runner(path) as runner:
            results = [runner.infer(self._feed(c)) for c in self.cases]
        return compare(
            self.task,
            self.outputs,
            self.cases,
            reference,
            results,
            runtime=runner.name,
            precision=self.precision,
            pooling=self.pooling,
        )
