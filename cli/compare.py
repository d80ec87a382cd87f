"""``bert-export compare A B``, and the data/metric/report side of ``bert-export validate``.

A thin layer over ``bert_export.evaluation``; the click options for the reports and gates are
shared by both commands (``report_options``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bert_export.cli.options import batching_of, keep_order_option, threads_option
from bert_export.cli.paths import OutputFile
from bert_export.cli.report_options import report_options
from bert_export.cli.runtime_option import runtime_option
from bert_export.models import BertExportError, ParityError
from bert_export.models.progress import Steps, console


def finish(
    report: Any, *, json_path: Path | None, junit: Path | None, markdown: Path | None, quiet: bool, what: str
) -> None:
    """Write the reports, print the table, and exit 1 (ParityError) when a gate failed."""
    from bert_export.evaluation.report import write_reports

    write_reports(report, json_path=json_path, junit=junit, markdown=markdown)
    if not quiet:
        from rich.console import Console

        out = Console()
        if not out.is_terminal:
            out.width = max(out.width, 120)
        out.print(report.table())
    if not report.passed:
        raise ParityError(f"{what} fails: {'; '.join(report.failures[:3])}")


def run_validate(
    bundle: Path,
    *,
    model: str | None,
    runtime: str,
    threads: int | None,
    report: Path | None,
    quiet: bool,
    allow_pickle: bool,
    data: Path | None,
    limit: int | None,
    batch: int,
    max_metric_drop: float,
    expect_ops: Path | None,
    junit: Path | None,
    markdown: Path | None,
    precision: str | None = None,
    batching: str = "length",
) -> None:
    """``validate`` with any of the new options: against the checkpoint (``--model``) or the stored cases.

    ``precision``: which graph of a multi-precision bundle (default: its default); ``batching``: how
    ``--data`` is cut into batches (runtimes/batching.py; ``--keep-order`` gives "input-order")."""
    from bert_export.evaluation import validate_data, validate_stored

    steps = Steps(quiet=quiet)
    if model is not None:
        result = validate_data(
            bundle,
            model=model,
            data=data,
            limit=limit,
            batch=batch,
            runtime=runtime,
            threads=threads,
            max_metric_drop=max_metric_drop,
            expect_ops=expect_ops,
            allow_pickle=allow_pickle,
            steps=steps,
            precision=precision,
            batching=batching,
        )
    else:
        if batching != "length":
            raise BertExportError(
                "--keep-order orders the batches of --data run against --model CKPT; the stored cases are "
                "fixed batches already: leave it out, or pass --model"
            )
        if data is not None or limit is not None:
            raise BertExportError(
                "--data needs --model CKPT (the PyTorch checkpoint to compare against); to compare two "
                "bundles without PyTorch use `bert-export compare A B --data FILE`"
            )
        result = validate_stored(
            bundle, runtime=runtime, threads=threads, expect_ops=expect_ops, steps=steps, precision=precision
        )
    finish(result, json_path=report, junit=junit, markdown=markdown, quiet=quiet, what=f"{bundle} on {runtime}")


@click.command(name="compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@runtime_option("Runtime for both bundles")
@threads_option()
@click.option("--report", type=OutputFile(), default=None, help="Write the JSON report here.")
@report_options
@keep_order_option()
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress lines or result table (exit code and report files only)."
)
def compare_command(
    a: Path,
    b: Path,
    runtime: str,
    threads: int | None,
    report: Path | None,
    data: Path | None,
    limit: int | None,
    batch: int,
    max_metric_drop: float,
    expect_ops: Path | None,
    junit: Path | None,
    markdown: Path | None,
    keep_order: bool,
    quiet: bool,
) -> None:
    """Run bundle B against bundle A (the reference) on the same inputs: parity, metrics, gates; no PyTorch needed.

    For example an int8 bundle against the fp32 one, or today's export against yesterday's. B's
    precision sets the gate. Without --data the built-in English texts are used.
    """
    from bert_export.evaluation import compare_bundles

    result = compare_bundles(
        a,
        b,
        data=data,
        limit=limit,
        batch=batch,
        runtime=runtime,
        threads=threads,
        max_metric_drop=max_metric_drop,
        expect_ops=expect_ops,
        steps=Steps(quiet=quiet),
        batching=batching_of(keep_order),
    )
    finish(result, json_path=report, junit=junit, markdown=markdown, quiet=quiet, what=f"{b} vs {a} on {runtime}")


__all__ = ["compare_command", "run_validate", "console"]


COMMANDS = (compare_command,)
