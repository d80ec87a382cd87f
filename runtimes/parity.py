"""The parity harness: compare any runner's outputs against the PyTorch reference.

Kept apart from the runners (Polygraphy's comparator is the model). Only real-token positions
are compared: what a graph writes at padding is undefined and differs legitimately between
runtimes. Besides raw differences, each task gets the metric its users care about, because an
fp16 or int8 graph is judged on agreement, not on bit-equality.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bert_export.models import Task, TensorSpec
from bert_export.models.postprocess import pool  # noqa: F401  (re-exported: the pooling users get from `run`)
from bert_export.models.precisions import GATES, Gate  # noqa: F401  (re-exported: the comparator's callers)
from bert_export.models.tasks.base import cosine  # noqa: F401  (re-exported: the comparator's callers)
from bert_export.runtimes.cases import Case

# Elementwise relative difference uses this floor on |reference| so that values near zero do
# not turn a 1e-7 absolute difference into a huge ratio.
REL_FLOOR = 1e-3
# Outputs with a vocabulary axis are stored for validation only at these rows (see reduce_rows).
STORED_ROWS_PER_CASE = 32


@dataclass
class Tally:
    """Counts that add up across cases (agreements) plus extremes (cosines, diffs)."""

    agree: int = 0
    total: int = 0
    cos: list[float] = field(default_factory=list)

    def add(self, agree: int, total: int) -> None:
        self.agree += int(agree)
        self.total += int(total)

    @property
    def rate(self) -> float | None:
        return self.agree / self.total if self.total else None


def diff_stats(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    if ref64.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "mean_abs": 0.0}
    d = np.abs(ref64 - got64)
    if not np.all(np.isfinite(got64)):
        return {"max_abs": float("inf"), "max_rel": float("inf"), "mean_abs": float("inf")}
    return {
        "max_abs": float(d.max()),
        "max_rel": float((d / np.maximum(np.abs(ref64), REL_FLOOR)).max()),
        "mean_abs": float(d.mean()),
    }


def rows_for(spec: TensorSpec, case: Case, stored_rows: np.ndarray | None = None) -> np.ndarray | None:
    """Which [batch, sequence] positions of an output are compared (None: the whole output)."""
    if not spec.has_sequence_axis:
        return None
    return case.keep if stored_rows is None else stored_rows


def reduce_rows(case: Case) -> np.ndarray:
    """Rows kept when a vocab-sized output is stored: every masked token, then real tokens up to a cap."""
    rows = case.mlm_positions.copy() if case.mlm_positions is not None else np.zeros(case.keep.shape, bool)
    extra = np.argwhere(case.keep & ~rows)[:STORED_ROWS_PER_CASE]
    rows[tuple(extra.T)] = True
    return rows


def task_metrics(
    task: Task,
    case: Case,
    ref: dict[str, np.ndarray],
    got: dict[str, np.ndarray],
    rows: dict[str, np.ndarray | None],
    pooling: str,
    tallies: dict[str, Tally],
) -> dict[str, float]:
    """The task's own measure of agreement for one case (``Task.parity_measures``), added into ``tallies``."""
    out: dict[str, float] = {}
    for m in task.parity_measures(case, ref, got, rows, pooling):
        tally = tallies.setdefault(m.key, Tally())
        if m.cosines is not None:
            tally.cos.extend(m.cosines.tolist())
            out[f"{m.key}_mean"], out[f"{m.key}_min"] = float(m.cosines.mean()), float(m.cosines.min())
        else:
            tally.add(m.agree, m.total)
            out[m.key] = m.value
    return out


@dataclass
class Report:
    """The parity report: JSON for machines, a rich table for people."""

    runtime: str
    precision: str
    task: str
    gate: Gate
    cases: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # What actually ran (e.g. the ONNX Runtime providers a session got after any fallback).
    providers: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "runtime": self.runtime,
            "precision": self.precision,
            "task": self.task,
            "gate": asdict(self.gate),
            "providers": self.providers,
            "summary": self.summary,
            "failures": self.failures,
            "cases": self.cases,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, allow_nan=True)

    def table(self) -> Any:
        """Differences per case and output, then the task metrics per case, then the verdict."""
        from rich.console import Group
        from rich.table import Table

        diffs = Table(
            title=f"parity: {self.runtime} {self.precision} vs PyTorch fp32 ({self.task})", title_justify="left"
        )
        for col in ("case", "shape", "output", "max abs", "max rel", "mean abs"):
            diffs.add_column(col, justify="left" if col in ("case", "output") else "right", no_wrap=True)
        keys: list[str] = []
        for case in self.cases:
            for i, (name, s) in enumerate(case["outputs"].items()):
                diffs.add_row(
                    case["name"] if i == 0 else "",
                    "x".join(map(str, case["shape"])) if i == 0 else "",
                    name,
                    f"{s['max_abs']:.2e}",
                    f"{s['max_rel']:.2e}",
                    f"{s['mean_abs']:.2e}",
                )
            keys += [k for k in case["metrics"] if k not in keys]
        metrics = Table(title=f"task metrics ({self.task})", title_justify="left")
        metrics.add_column("case", no_wrap=True)
        for k in keys:
            metrics.add_column(SHORT.get(k, k), justify="right", no_wrap=True)
        for case in self.cases:
            metrics.add_row(case["name"], *(f"{case['metrics'][k]:.4f}" if k in case["metrics"] else "-" for k in keys))
        verdict = "[green]PASS[/]" if self.passed else "[red]FAIL[/]: " + "; ".join(self.failures)
        return Group(diffs, metrics, f"{self.precision} gate: {verdict}")


SHORT = {
    "argmax_agreement": "argmax agree",
    "top1_agreement": "top1 agree",
    "top5_agreement": "top5 agree",
    "start_agreement": "start",
    "end_agreement": "end",
    "span_exact_match": "span EM",
    "cosine_mean": "cos mean",
    "cosine_min": "cos min",
}


def compare(
    task: Task,
    outputs: tuple[TensorSpec, ...],
    cases: list[Case],
    reference: list[dict[str, np.ndarray]],
    results: list[dict[str, np.ndarray]],
    *,
    runtime: str,
    precision: str,
    pooling: str = "cls",
    stored_rows: list[dict[str, np.ndarray]] | None = None,
) -> Report:
    """Compare ``results`` with ``reference`` case by case and apply the precision's gate.

    ``reference`` outputs may already be gathered to ``stored_rows`` (a bundle's stored
    reference for vocab-sized outputs); the runtime's outputs are gathered the same way.
    """
    gate = GATES[precision]
    report = Report(runtime, precision, task.name, gate)
    if not cases or len(results) != len(cases) or len(reference) != len(cases):
        report.failures.append("no parity cases to compare: a gate over nothing proves nothing")
    tallies: dict[str, Tally] = {}
    worst: dict[str, float] = {}
    for i, (case, ref, got) in enumerate(zip(cases, reference, results)):
        rows: dict[str, np.ndarray | None] = {}
        ref_g, got_g, stats = {}, {}, {}
        for spec in outputs:
            stored = stored_rows[i].get(spec.name) if stored_rows else None
            rows[spec.name] = rows_for(spec, case, stored)
            r, g = ref[spec.name], got[spec.name]
            if rows[spec.name] is not None:
                g = g[rows[spec.name]]
                r = r if stored is not None else r[rows[spec.name]]
            if r.shape != g.shape:
                report.failures.append(f"{case.name}: output {spec.name} has shape {g.shape}, reference {r.shape}")
                continue
            ref_g[spec.name], got_g[spec.name] = r, g
            stats[spec.name] = diff_stats(r, g)
            worst[spec.name] = max(worst.get(spec.name, 0.0), stats[spec.name]["max_abs"])
        full_ref = {k: v for k, v in ref.items()}
        metric_ref = ref_g if task.parity_gathered else full_ref
        metric_got = got_g if task.parity_gathered else got
        metrics = (
            task_metrics(task, case, metric_ref, metric_got, rows, pooling, tallies)
            if len(stats) == len(outputs)
            else {}
        )
        report.cases.append({"name": case.name, "shape": list(case.shape), "outputs": stats, "metrics": metrics})
    report.summary = _summarise(worst, tallies)
    report.failures.extend(_apply_gate(gate, report.summary))
    return report


def _summarise(worst: dict[str, float], tallies: dict[str, Tally]) -> dict[str, Any]:
    summary: dict[str, Any] = {"max_abs": worst}
    for key, t in tallies.items():
        if key == "cosine":
            summary["cosine_mean"] = float(np.mean(t.cos)) if t.cos else 1.0
            summary["cosine_min"] = float(np.min(t.cos)) if t.cos else 1.0
        else:
            summary[key] = t.rate
    return summary


def _apply_gate(gate: Gate, summary: dict[str, Any]) -> list[str]:
    failures = []
    if gate.max_abs is not None:
        for name, v in summary["max_abs"].items():
            if not v <= gate.max_abs:
                failures.append(f"{name}: max abs diff {v:.3g} > {gate.max_abs:g}")
    for key, v in summary.items():
        if key.endswith("agreement") or key == "span_exact_match":
            if v is not None and v < gate.agreement:
                failures.append(f"{key} {v:.4f} < {gate.agreement}")
    if "cosine_mean" in summary and summary["cosine_mean"] < gate.cos_mean:
        failures.append(f"pooled-embedding cosine mean {summary['cosine_mean']:.6f} < {gate.cos_mean}")
    if "cosine_min" in summary and summary["cosine_min"] < gate.cos_min:
        failures.append(f"pooled-embedding cosine min {summary['cosine_min']:.6f} < {gate.cos_min}")
    return failures
