"""``bert-export validate``: re-run a bundle's parity cases, or validate it on your checkpoint and data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from bert_export.bundle.layout import PRECISIONS
from bert_export.cli.options import batching_of, keep_order_option, threads_option
from bert_export.cli.paths import OutputFile
from bert_export.cli.report_options import DEFAULT_MAX_METRIC_DROP, report_options
from bert_export.cli.runtime_option import runtime_option
from bert_export.models import ParityError
from bert_export.models.progress import Steps, console


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@runtime_option("Runtime to check")
@threads_option()
@click.option("--report", type=OutputFile(), default=None, help="Write the parity report JSON here.")
@click.option(
    "--model",
    "model",
    type=click.Path(path_type=str),  # an input: no output of this command may touch it
    default=None,
    help="Your checkpoint (directory, safetensors): recompute the PyTorch reference on --data.",
)
@click.option("--allow-pickle", is_flag=True, help="With --model: allow pickle (.bin) weights you trust.")
@report_options
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, help="Which graph of the bundle [its default]."
)
@keep_order_option()
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress lines or result table (exit code and report files only)."
)
def validate(
    bundle: Path,
    runtime: str,
    threads: int | None,
    report: Path | None,
    quiet: bool,
    model: str | None,
    allow_pickle: bool,
    precision: str | None,
    keep_order: bool,
    **extra: Any,
) -> None:
    """Verify a bundle's checksums and re-run its parity cases against the stored PyTorch outputs.

    With --model CKPT [--data FILE]: recompute the reference from your checkpoint on your data and
    report the task metric against gold labels of both sides (docs/validation.md).
    """
    from bert_export.bundle.publish import write_atomic
    from bert_export.exporter.api import validate as run_validate

    defaults = {
        "data": None,
        "limit": None,
        "batch": 16,
        "max_metric_drop": DEFAULT_MAX_METRIC_DROP,
        "expect_ops": None,
        "junit": None,
        "markdown": None,
    }
    if model is not None or allow_pickle or keep_order or any(extra[k] != v for k, v in defaults.items()):
        from bert_export.cli.compare import run_validate as run_on_data

        run_on_data(
            bundle,
            model=model,
            runtime=runtime,
            threads=threads,
            report=report,
            quiet=quiet,
            allow_pickle=allow_pickle,
            precision=precision,
            batching=batching_of(keep_order),
            **extra,
        )
        _warn_untrained(bundle)  # after the report: a refusal stays one error line
        return
    result = run_validate(bundle, runtime=runtime, threads=threads, steps=Steps(quiet=quiet), precision=precision)
    if report is not None:
        write_atomic(report, result.dumps() + "\n", "--report")
    if not quiet:
        console.print(result.table())
    if not result.passed:
        raise ParityError(f"{bundle} fails its {result.precision} gate on {runtime}: {'; '.join(result.failures[:3])}")


def _warn_untrained(bundle: Path) -> None:
    """Metrics of a bundle whose head (or every weight) is random mean nothing: say so on every use."""
    from rich.markup import escape

    from bert_export.bundle.manifest import untrained_warning
    from bert_export.bundle.reader import read_manifest
    from bert_export.models import BertExportError

    try:
        warning = untrained_warning(read_manifest(bundle))
    except (BertExportError, OSError):
        return  # the validation itself reports an unreadable bundle, in its own words
    if warning:
        console.print(f"[bold yellow]{escape(warning)}[/bold yellow]", soft_wrap=True)


COMMANDS = (validate,)
