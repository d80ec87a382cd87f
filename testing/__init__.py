"""One line for a user's own pytest suite:

    from bert_export.testing import assert_parity
    def test_shipped_model():
        assert_parity("exports/sst2-int8", model="checkpoints/sst2", data="tests/dev.csv", max_metric_drop=0.5)

Raises ``AssertionError`` whose message is the report as text (parity numbers, the metric table,
each gate), so the failure in the test log says what moved and by how much.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bert_export.evaluation import EvalReport, compare_bundles, validate_data, validate_stored
from bert_export.evaluation.run import DEFAULT_BATCH, DEFAULT_MAX_METRIC_DROP

__all__ = ["assert_parity", "report_text"]


def report_text(report: EvalReport, width: int = 120) -> str:
    """The report's table as plain text."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(report.table())
    return console.file.getvalue()  # type: ignore[attr-defined]


def assert_parity(
    bundle: str | Path,
    *,
    model: str | Path | None = None,
    reference: str | Path | None = None,
    data: str | Path | None = None,
    limit: int | None = None,
    batch: int = DEFAULT_BATCH,
    max_metric_drop: float | None = DEFAULT_MAX_METRIC_DROP,
    expect_ops: str | Path | None = None,
    runtime: str = "ort",
    threads: int | None = None,
    allow_pickle: bool = False,
) -> EvalReport:
    """Check ``bundle`` against PyTorch from ``model`` (or against bundle ``reference``, or its stored cases).

    Returns the report when every gate passes; raises ``AssertionError`` with the report's text otherwise.
    Bad input (a missing file, a column the data lacks) raises ``BertExportError`` as the CLI would.
    """
    if model is not None and reference is not None:
        raise ValueError("pass model= (a PyTorch checkpoint) or reference= (a bundle), not both")
    common: dict[str, Any] = {"runtime": runtime, "threads": threads, "expect_ops": expect_ops}
    if model is not None:
        report = validate_data(
            bundle,
            model=model,
            data=data,
            limit=limit,
            batch=batch,
            max_metric_drop=max_metric_drop,
            allow_pickle=allow_pickle,
            **common,
        )
    elif reference is not None:
        report = compare_bundles(
            reference, bundle, data=data, limit=limit, batch=batch, max_metric_drop=max_metric_drop, **common
        )
    else:
        if data is not None:
            raise ValueError("data= needs model= (the PyTorch checkpoint) or reference= (a bundle) to compare against")
        report = validate_stored(bundle, **common)
    if not report.passed:
        raise AssertionError(f"{bundle} fails: {'; '.join(report.failures[:3])}\n{report_text(report)}")
    return report
