"""The validation report: parity (``runtimes.parity.Report``) + task metrics + gates, in the
formats CI systems display: JSON, JUnit XML and Markdown, and a rich table for people.

JUnit layout (what GitHub Actions, GitLab and Jenkins reporters read): one ``<testsuite>``, one
``<testcase>`` per parity case (a batch of the user's data, or a stored case) and one per gate
(precision, each metric's drop, fused ops); a failing testcase carries the numbers in its
``<failure>``. Written with the standard library's ElementTree (the format is a few elements;
the tests read it back with junitparser).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_export.evaluation.scoring import MetricRow
from bert_export.runtimes.parity import SHORT, Report, _apply_gate


@dataclass
class GateResult:
    """One gate's verdict; ``detail`` holds the numbers a failure shows."""

    name: str
    passed: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class EvalReport:
    """What ``validate`` (with or without ``--model``) and ``compare`` report."""

    parity: Report
    reference: str  # "pytorch fp32 (CKPT)", "stored PyTorch reference", or bundle A
    candidate: str  # the bundle (and runtime) under test
    metrics: list[MetricRow] = field(default_factory=list)
    max_metric_drop: float | None = None
    ops: GateResult | None = None
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def gates(self) -> list[GateResult]:
        p = self.parity
        out = [
            GateResult(
                f"precision gate ({p.precision})",
                p.passed,
                "; ".join(p.failures) if p.failures else _summary_text(p.summary),
            )
        ]
        if self.max_metric_drop is not None:
            for row in self.metrics:
                ok = row.drop <= self.max_metric_drop
                out.append(
                    GateResult(
                        f"{row.name} drop <= {self.max_metric_drop:g} points",
                        ok,
                        f"{row.name}: reference {100 * row.reference:.2f}, candidate {100 * row.candidate:.2f}, "
                        f"drop {row.drop:.2f} points (max {self.max_metric_drop:g})",
                    )
                )
        if self.ops is not None:
            out.append(self.ops)
        return out

    @property
    def failures(self) -> list[str]:
        return [
            g.detail if g.name.startswith("precision") else f"{g.name}: {g.detail}" for g in self.gates if not g.passed
        ]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    # --- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The parity report's keys (as before) plus metrics, gates and data."""
        out = self.parity.to_json()
        out.update(
            {
                "passed": self.passed,
                "reference": self.reference,
                "candidate": self.candidate,
                "parity_passed": self.parity.passed,
                "data": self.data,
                "metrics": [r.to_json() for r in self.metrics],
                "max_metric_drop": self.max_metric_drop,
                "gates": [g.to_json() for g in self.gates],
                "failures": self.failures,
                "notes": self.notes,
            }
        )
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, allow_nan=True)

    # --- people ------------------------------------------------------------------------------

    def metric_table(self) -> Any:
        from rich.table import Table

        t = Table(
            title=f"task metrics vs gold ({self.parity.task}, {self.data.get('examples', '?')} examples)",
            title_justify="left",
        )
        for col in ("metric", "reference", "candidate", "drop (points)"):
            t.add_column(col, justify="left" if col == "metric" else "right", no_wrap=True)
        for r in self.metrics:
            t.add_row(r.name, f"{100 * r.reference:.2f}", f"{100 * r.candidate:.2f}", f"{r.drop:+.2f}")
        return t

    def table(self) -> Any:
        from rich.console import Group

        parts: list[Any] = [f"reference: {self.reference}\ncandidate: {self.candidate}", self.parity.table()]
        if self.metrics:
            parts.append(self.metric_table())
        if self.disagreement_line:
            parts.append(self.disagreement_line)
        for g in self.gates:
            parts.append(f"{g.name}: " + ("[green]PASS[/]" if g.passed else f"[red]FAIL[/] {g.detail}"))
        parts.extend(self.notes)
        return Group(*parts)

    @property
    def disagreement_line(self) -> str:
        d = self.data.get("disagreements") or {}
        if not d:
            return ""
        first = d["first"][0] if d.get("first") else None
        where = (
            f" (first: example {first['example'] + 1}, {first['reference']!r} -> {first['candidate']!r})"
            if first
            else ""
        )
        return f"predictions differ on {d['count']} of {d['of']} inputs{where}"

    def markdown(self) -> str:
        """A CI job summary (GitHub's $GITHUB_STEP_SUMMARY, GitLab MR notes)."""
        p = self.parity
        lines = [
            f"## bert-export: {'✅ pass' if self.passed else '❌ fail'} ({p.task}, {p.precision} on {p.runtime})",
            "",
            f"- reference: {_md(self.reference)}",
            f"- candidate: {_md(self.candidate)}",
        ]
        if self.data:
            lines.append(
                f"- data: {_md(str(self.data.get('path', 'stored cases')))}: {self.data.get('examples', '?')} examples "
                f"in {self.data.get('batches', len(p.cases))} batches"
            )
        if self.metrics:
            lines += ["", "| metric | reference | candidate | drop (points) |", "|---|---:|---:|---:|"]
            lines += [
                f"| {r.name} | {100 * r.reference:.2f} | {100 * r.candidate:.2f} | {r.drop:+.2f} |"
                for r in self.metrics
            ]
        if self.disagreement_line:
            lines += ["", f"- {_md(self.disagreement_line)}"]
        lines += ["", "| gate | result | numbers |", "|---|---|---|"]
        lines += [f"| {_md(g.name)} | {'pass' if g.passed else '**FAIL**'} | {_md(g.detail)} |" for g in self.gates]
        keys = [k for k in p.summary if k != "max_abs"]
        lines += ["", "| output | max abs diff |", "|---|---:|"]
        lines += [f"| {name} | {v:.3g} |" for name, v in p.summary.get("max_abs", {}).items()]
        if keys:
            lines += ["", "| parity metric | value |", "|---|---:|"]
            lines += [f"| {SHORT.get(k, k)} | {_num(p.summary[k])} |" for k in keys]
        lines += [f"> {_md(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    # --- JUnit -------------------------------------------------------------------------------

    def junit(self, suite: str = "bert-export") -> str:
        p = self.parity
        suite_el = ET.Element("testsuite", name=suite)
        cases = [
            (f"parity.{p.task}", c["name"] + " " + "x".join(map(str, c["shape"])), _case_failures(p, c), _case_text(c))
            for c in p.cases
        ]
        cases += [("gates", g.name, [] if g.passed else [g.detail], g.detail) for g in self.gates]
        failures = 0
        for classname, name, fails, text in cases:
            tc = ET.SubElement(suite_el, "testcase", classname=classname, name=name, time="0")
            if fails:
                failures += 1
                ET.SubElement(tc, "failure", message="; ".join(fails)[:500], type="GateFailed").text = text
            else:
                ET.SubElement(tc, "system-out").text = text
        suite_el.set("tests", str(len(cases)))
        suite_el.set("failures", str(failures))
        suite_el.set("errors", "0")
        suite_el.set("skipped", "0")
        root = ET.Element("testsuites", name=suite, tests=str(len(cases)), failures=str(failures), errors="0")
        root.append(suite_el)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _num(v: Any) -> str:
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _summary_text(summary: dict[str, Any]) -> str:
    parts = [f"{k} max abs {v:.3g}" for k, v in summary.get("max_abs", {}).items()]
    parts += [f"{SHORT.get(k, k)} {v:.4f}" for k, v in summary.items() if k != "max_abs" and isinstance(v, float)]
    return "; ".join(parts)


def _case_failures(report: Report, case: dict[str, Any]) -> list[str]:
    """The precision gate applied to one case's own numbers."""
    summary = {"max_abs": {k: s["max_abs"] for k, s in case["outputs"].items()}, **case["metrics"]}
    return _apply_gate(report.gate, summary)


def _case_text(case: dict[str, Any]) -> str:
    lines = [
        f"{name}: max abs {s['max_abs']:.3g}, max rel {s['max_rel']:.3g}, mean abs {s['mean_abs']:.3g}"
        for name, s in case["outputs"].items()
    ]
    lines += [f"{SHORT.get(k, k)}: {v:.4f}" for k, v in case["metrics"].items()]
    return "\n".join(lines)


# --- writing ----------------------------------------------------------------------------------

FORMATS = {"report": ".json", "junit": ".xml", "markdown": ".md"}


def write_reports(
    report: EvalReport, *, json_path: Path | None = None, junit: Path | None = None, markdown: Path | None = None
) -> None:
    """Each report through the package's one writer (``bundle.publish.write_atomic``: atomic, never
    through a link or a device, one ``error:`` line on a full or read-only disk). The paths were
    checked together before the work (``publish.check_outputs``)."""
    from bert_export.bundle.publish import write_atomic

    if json_path is not None:
        write_atomic(json_path, report.dumps() + "\n", "--report")
    if junit is not None:
        write_atomic(junit, report.junit(), "--junit")
    if markdown is not None:
        write_atomic(markdown, report.markdown(), "--markdown")
