"""Accuracy-aware fallback: keep the fewest, most sensitive nodes in higher precision.

1. Sensitivity: for every candidate node, build the low-precision graph with only that node
   kept in fp32 and measure how far its outputs on the *calibration* text are from the fp32
   graph's (relative L2 error summed over outputs). Nodes whose exclusion helps most are the
   most sensitive. (Leave-one-out, not one-at-a-time: errors in transformers compound, and the
   question we ask is "what does keeping this node buy", which is what leave-one-out measures.)
2. Greedy: keep the top-1, top-2, ... nodes until the parity gate (on the parity cases, a
   different text set) holds, or every candidate is kept and it still fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

Build = Callable[[frozenset[str]], Path]
Probe = Callable[[Path], Any]  # -> runtimes.parity.Report


@dataclass
class FallbackResult:
    kept: list[str]
    passed: bool
    report: Any
    first_failures: list[str] = field(default_factory=list)
    first_summary: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kept_fp32": self.kept, "passed": self.passed, "gate_evaluations": self.evaluations,
            "before": {"failures": self.first_failures, "summary": self.first_summary},
            "sensitivity": {k: round(v, 6) for k, v in sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:16]},
        }


def run_outputs(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [[np.asarray(o, dtype=np.float64) for o in sess.run(None, f)] for f in feeds]


def output_error(ref: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """Mean over feeds of the summed relative L2 error of every output."""
    errs = []
    for r_outs, g_outs in zip(ref, got):
        e = 0.0
        for r, g in zip(r_outs, g_outs):
            e += float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-12)) if np.all(np.isfinite(g)) else float("inf")
        errs.append(e)
    return float(np.mean(errs)) if errs else 0.0


def sensitivity(candidates: Sequence[str], build: Build, reference_graph: Path, feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per node: how much the calibration error drops when that node alone stays fp32."""
    ref = run_outputs(reference_graph, feeds)
    base = output_error(ref, run_outputs(build(frozenset()), feeds))
    return {name: base - output_error(ref, run_outputs(build(frozenset([name])), feeds)) for name in candidates}


def accuracy_fallback(candidates: Sequence[str], build: Build, probe: Probe, reference_graph: Path,
                      feeds: Sequence[dict[str, np.ndarray]], max_kept: int | None = None) -> FallbackResult:
    """Keep nodes in fp32, most sensitive first, until ``probe`` (the parity gate) passes."""
    report = probe(build(frozenset()))
    result = FallbackResult([], report.passed, report, list(report.failures), dict(report.summary), evaluations=1)
    if report.passed or not candidates:
        return result
    result.sensitivity = sensitivity(candidates, build, reference_graph, feeds)
    order = sorted(candidates, key=lambda n: -result.sensitivity[n])
    limit = len(order) if max_kept is None else min(max_kept, len(order))
    for k in range(1, limit + 1):
        kept = frozenset(order[:k])
        report = probe(build(kept))
        result.evaluations += 1
        result.kept, result.report, result.passed = order[:k], report, report.passed
        if report.passed:
            break
    return result
