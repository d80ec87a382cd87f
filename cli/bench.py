"""``bert-export bench``: latency and throughput of a bundle against PyTorch, with a table, JSON and a plot."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bert_export.bundle.layout import PRECISIONS
from bert_export.cli.options import threads_option
from bert_export.cli.paths import OutputFile
from bert_export.cli.runtime_option import runtime_option
from bert_export.models import BertExportError
from bert_export.models.progress import console


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@runtime_option("Runtime to measure")
@click.option("--batch", "batch", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--seq", "seq", default=None, help="Comma-separated sequence lengths [128,512, trimmed to the bundle's maximum]."
)
@click.option(
    "--warmup", default=3, show_default=True, help="Untimed runs per batch x seq (allocators, kernel choice, caches)."
)
@click.option("--runs", default=20, show_default=True, help="Timed runs per batch x seq; p50/p90/p99 are over these.")
@threads_option("Intra-op threads for the runtime AND PyTorch [library defaults].")
@click.option(
    "--json",
    "json_path",
    type=OutputFile(allow_dash=True),
    default=None,
    help="Write the results as JSON ('-' for stdout).",
)
@click.option(
    "--plot",
    "plot_path",
    type=OutputFile(),
    default=None,
    help="Draw latency against sequence length to this PNG.",
)
@click.option("--no-torch", is_flag=True, help="Skip the PyTorch eager fp32 baseline (and speedup_vs_torch).")
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, help="Which graph of the bundle [its default]."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def bench(
    bundle: Path,
    runtime: str,
    batch: str,
    seq: str | None,
    warmup: int,
    runs: int,
    threads: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    no_torch: bool,
    precision: str | None,
    quiet: bool,
) -> None:
    """Measure p50/p90/p99 latency, throughput, GFLOP/s and peak memory of BUNDLE at each batch x seq.

    The same inputs (the bundle's tokenizer on built-in English text, full attention masks) also
    run through PyTorch eager fp32, built from the bundle's config.json with random weights (a
    bundle has no PyTorch checkpoint; dense fp32 latency does not depend on weight values), and
    each row reports its speedup over it. GFLOP/s counts the model's useful work from its
    configuration: ModernBERT's local-attention layers are credited only their window.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from bert_export.bundle.publish import write_atomic
    from bert_export.runtimes.bench import bench as run_bench
    from bert_export.runtimes.bench import parse_sizes, plot

    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise BertExportError(f"--plot {plot_path} must name a .png file")
    # Before minutes of measuring (the paths were checked by cli.paths.guard_outputs): what drawing needs.
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise BertExportError(
                "--plot needs matplotlib, which is not installed: pip install matplotlib "
                "(or bert-export[bench]), or leave out --plot"
            ) from None
    batches = parse_sizes(batch, "batch")
    seqs = parse_sizes(seq, "seq") if seq is not None else None
    bar = Progress(
        TextColumn("Benchmarking"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )

    def progress(total: int):  # type: ignore[no-untyped-def]
        task = bar.add_task("bench", total=total)
        return lambda: bar.advance(task)

    with bar:
        result = run_bench(
            bundle,
            runtime=runtime,
            batches=batches,
            seqs=seqs,
            warmup=warmup,
            runs=runs,
            threads=threads,
            with_torch=not no_torch,
            progress=progress,
            precision=precision,
        )
    to_stdout = json_path is not None and str(json_path) == "-"
    if to_stdout:
        sys.stdout.write(result.dumps() + "\n")
    elif json_path is not None:
        write_atomic(json_path, result.dumps() + "\n", "--json")
    if plot_path is not None:
        plot(result, plot_path)
    out = console if to_stdout else Console()
    if not out.is_terminal:
        out.width = max(out.width, 120)  # a file or pipe is not a narrow terminal: do not fold the table
    out.print(result.table())


COMMANDS = (bench,)
