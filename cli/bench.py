"""``bert-export bench``: latency and throughput of a bundle against PyTorch, with a table, JSON and a plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bert_export.bundle.layout import PRECISIONS
from bert_export.cli.options import batching_of, keep_order_option, threads_option
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
@click.option(
    "--file",
    "--data",
    "text_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Also time the corpus path (run --file) on these texts: batched by length vs in input order, texts/s.",
)
@click.option("--column", default=None, help="--file .jsonl/.csv/.tsv: the field holding the text [text].")
@click.option("--limit", type=int, default=None, help="--file: use only its first N texts.")
@click.option(
    "--token-budget",
    type=int,
    default=None,
    help="--file: padded tokens per inference call (texts x the batch's longest) [4096].",
)
@keep_order_option("--file: time only the input-order batching (the old order), not the length-aware one.")
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
    text_file: Path | None,
    column: str | None,
    limit: int | None,
    token_budget: int | None,
    keep_order: bool,
    quiet: bool,
) -> None:
    """Measure p50/p90/p99 latency, throughput, GFLOP/s and peak memory of BUNDLE at each batch x seq.

    The same inputs (the bundle's tokenizer on built-in English text, full attention masks) also
    run through PyTorch eager fp32, built from the bundle's config.json with random weights (a
    bundle has no PyTorch checkpoint; dense fp32 latency does not depend on weight values), and
    each row reports its speedup over it. GFLOP/s counts the model's useful work from its
    configuration: ModernBERT's local-attention layers are credited only their window.

    With --file TEXTS: also the corpus path (what run --file runs) over your texts, batched by
    length and in input order (--keep-order: input order only), texts/s (median of --runs, at least 3).
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
    if token_budget is not None and token_budget < 1:
        raise BertExportError(f"--token-budget must be >= 1, got {token_budget}")
    texts = _corpus_texts(bundle, text_file, column, limit, precision, keep_order or token_budget is not None)
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
        corpus = None
        if texts is not None:
            from bert_export.bundle.reader import load_bundle
            from bert_export.runtimes.corpus_bench import bench_corpus

            corpus = bench_corpus(
                load_bundle(bundle, precision=precision),
                texts,
                source=str(text_file),
                runtime=runtime,
                threads=threads,
                batchings=(batching_of(True),) if keep_order else ("length", "input-order"),
                runs=max(3, min(runs, 5)),
                **({"token_budget": token_budget} if token_budget is not None else {}),
                progress=progress,
            )
    document = result.to_json() | ({"corpus": corpus.to_json()} if corpus is not None else {})
    to_stdout = json_path is not None and str(json_path) == "-"
    if to_stdout:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif json_path is not None:
        write_atomic(json_path, json.dumps(document, indent=2) + "\n", "--json")
    if plot_path is not None:
        plot(result, plot_path)
    out = console if to_stdout else Console()
    if not out.is_terminal:
        out.width = max(out.width, 120)  # a file or pipe is not a narrow terminal: do not fold the table
    out.print(result.table())
    if corpus is not None:
        out.print(corpus.table())


def _corpus_texts(
    bundle: Path, text_file: Path | None, column: str | None, limit: int | None, precision: str | None, keep_order: bool
) -> list[str] | None:
    """--file's texts, read and checked before minutes of measuring (None without --file)."""
    if text_file is None:
        if column is not None or limit is not None or keep_order:
            raise BertExportError(
                "--column, --limit and --keep-order apply to --file TEXTS; pass --file or leave them out"
            )
        return None
    from bert_export.bundle.reader import load_bundle
    from bert_export.models import get_task
    from bert_export.runtimes.corpus_bench import load_corpus

    task = load_bundle(bundle, precision=precision).manifest["task"]
    if get_task(task).input_fields != ("text",):
        raise BertExportError(f"--file times text tasks; this bundle's task is {task} (question and context pairs)")
    return load_corpus(text_file, column, limit)


COMMANDS = (bench,)
