"""``bert-export triton`` (a Triton model repository from a bundle) and ``bert-export serve`` (a live server).

Thin click wrappers over ``bert_export.serving`` (docs/serving.md). The serve extra is checked
before any work: a missing one is one ``error:`` line naming ``pip install bert-export[serve]``.
"""

from __future__ import annotations

from pathlib import Path

import click

from bert_export.cli.options import threads_option
from bert_export.cli.paths import OutputDir
from bert_export.cli.runtime_option import runtime_option
from bert_export.models.progress import console


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--repo", type=OutputDir(replaced=False), required=True, help="Model repository directory (created if absent)."
)
@click.option("--name", default=None, help="Model name [the bundle directory's name].")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True)
@click.option("--max-batch", default=32, show_default=True, help="max_batch_size of every model.")
@click.option("--instances", default=1, show_default=True, help="Instances of the graph model.")
@click.option(
    "--kind", type=click.Choice(["cpu", "gpu"]), default=None, help="Instance kind [gpu for tensorrt, else cpu]."
)
@click.option("--max-queue-delay-ms", default=2.0, show_default=True, help="Dynamic batching delay.")
@click.option(
    "--force", is_flag=True, help="Replace this bundle's models (NAME, NAME_tokenize, NAME_post, NAME_text) if present."
)
def triton(
    bundle: Path,
    repo: Path,
    name: str | None,
    backend: str,
    max_batch: int,
    instances: int,
    kind: str | None,
    max_queue_delay_ms: float,
    force: bool,
) -> None:
    """Write a Triton model repository for BUNDLE: the graph, tokenizer and post-processing models, a text ensemble."""
    from bert_export.serving.deps import require_serve

    require_serve(server=False)
    from bert_export.serving.repository import RepoOptions, write_repository

    written = write_repository(
        bundle,
        repo,
        RepoOptions(
            name=name,
            backend=backend,
            max_batch=max_batch,
            instances=instances,
            kind=kind,
            max_queue_delay_ms=max_queue_delay_ms,
        ),
        force=force,
    )
    for model in written:
        console.print(f"wrote {repo / model}")
    console.print(f"send text to [bold]{written[-1]}[/bold] (see docs/serving.md)")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (HTTP, gRPC, metrics).")
@click.option("--port", default=8000, show_default=True, help="HTTP port.")
@click.option("--grpc-port", default=None, type=int, help="gRPC port [--port + 1].")
@click.option("--metrics-port", default=None, type=int, help="Prometheus metrics port [--port + 2].")
@click.option("--max-batch", default=32, show_default=True, help="Largest batch Triton forms.")
@click.option("--max-queue-delay-ms", default=2.0, show_default=True, help="How long Triton waits to fill a batch.")
@click.option("--name", default=None, help="Model name [the bundle directory's name].")
@runtime_option("Runner (as for run)")
@threads_option()
@click.option(
    "--instances",
    default=2,
    show_default=True,
    help="Batches in flight at once (PyTriton model instances, threads sharing one runner).",
)
@click.option("--max-text-chars", default=20_000, show_default=True, help="Refuse longer texts (per input).")
@click.option(
    "--open-statistics", is_flag=True, help="Let clients read Triton's statistics API (token-protected by default)."
)
@click.option(
    "--max-request-mb",
    default=8.0,
    show_default=True,
    help="Refuse larger HTTP request bodies (413) before they reach Triton.",
)
@click.option("--verbose", is_flag=True, help="Show Triton's and PyTriton's logs (quiet by default: our lines only).")
def serve(
    bundle: Path,
    host: str,
    port: int,
    grpc_port: int | None,
    metrics_port: int | None,
    max_batch: int,
    max_queue_delay_ms: float,
    name: str | None,
    runtime: str,
    threads: int | None,
    instances: int,
    max_text_chars: int,
    open_statistics: bool,
    max_request_mb: float,
    verbose: bool,
) -> None:
    """Serve BUNDLE on Triton (through PyTriton): text in, run --json's JSON out, over HTTP and gRPC."""
    from bert_export.serving.deps import require_serve

    require_serve(server=True)
    from bert_export.serving.server import ServeOptions
    from bert_export.serving.server import serve as run_server

    opts = ServeOptions(
        host=host,
        port=port,
        grpc_port=grpc_port or port + 1,
        metrics_port=metrics_port or port + 2,
        max_batch=max_batch,
        max_queue_delay_ms=max_queue_delay_ms,
        name=name,
        runtime=runtime,
        threads=threads,
        instances=instances,
        max_text_chars=max_text_chars,
        open_statistics=open_statistics,
        max_request_bytes=int(max_request_mb * 1024 * 1024),
        verbose=verbose,
    )

    def say(line: str) -> None:
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    say(f"starting Triton for {bundle} ...")
    run_server(bundle, opts, say=say)
    say("stopped")


COMMANDS = (triton, serve)
