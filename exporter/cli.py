"""``bert-export``: a thin click layer over ``bert_export.exporter.api``.

One command per registered family (``bert-export bert --task qa ...``), generated from the
registry, plus commands that work on a bundle. Every user error ends as one ``error: ...``
line on stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from bert_export.evaluation.cli_options import DEFAULT_MAX_METRIC_DROP, report_options
from bert_export.models import FAMILIES, TASKS, BertExportError, ParityError
from bert_export.quantize.cli_options import optimization_options, options_from
from bert_export.runtimes.providers import RUNTIME_NAMES

from .layout import PRECISIONS
from .progress import Steps, console


class Cli(click.Group):
    """A group whose unknown-command error lists the families and commands in one line."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            families = ", ".join(FAMILIES)
            others = ", ".join(c for c in self.list_commands(ctx) if c not in FAMILIES)
            raise click.UsageError(f"unknown family or command {name!r}; families: {families}; commands: {others}")
        return super().resolve_command(ctx, args)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bert-export")
def cli() -> None:
    """Export BERT and ModernBERT task models to verified ONNX bundles."""


def _family_command(family_name: str) -> click.Command:
    fam = FAMILIES[family_name]

    @click.command(name=family_name, help=f"Export a {family_name} model (default {fam.default_id}) to a verified bundle.")
    @click.option("--task", "task", required=True, type=click.Choice(list(TASKS)), help="What the graph computes.")
    @click.option("--model", "model", default=None, help=f"Hub id (local cache only) or local directory; default {fam.default_id}.")
    @click.option("--random-init", is_flag=True, help="Random weights from the family's default config (seeded).")
    @click.option("--tiny", is_flag=True, help="With --random-init: the family's small test configuration.")
    @click.option("--config", "config_items", multiple=True, metavar="KEY=VALUE", help="Config overrides for --random-init.")
    @click.option("--seed", default=0, show_default=True, help="Seed for --random-init weights and parity text masking.")
    @click.option("--num-labels", type=int, default=None, help="Label count for seq-cls / token-cls heads.")
    @click.option("--out", type=click.Path(path_type=Path), default=None, help="Bundle directory [exports/<family>-<task>-<precision>].")
    @click.option("--force", is_flag=True, help="Replace an existing --out.")
    @click.option("--opset", default=18, show_default=True, help="ONNX opset (18 or newer).")
    @click.option("--max-seq", type=int, default=None, help="Longest sequence the bundle accepts [model max; 2048 for ModernBERT without the banded rewrite or with --runtime trt].")
    @click.option("--no-validate", is_flag=True, help="Skip the parity check against PyTorch (not recommended).")
    @click.option("--report", type=click.Path(path_type=Path), default=None, help="Also write the parity report JSON here.")
    @click.option("--allow-pickle", is_flag=True, help="Allow loading pickle (.bin) weights you trust.")
    @click.option("--trust-remote-code", is_flag=True, help="Allow model code from the checkpoint (off by default).")
    @click.option("-q", "--quiet", is_flag=True, help="No progress output.")
    @click.option("--precisions", default=None, metavar="LIST",
                  help="One graph per precision in one bundle, e.g. fp32,fp16,int8 (each optimized and gated; the first "
                       "is the default). Replaces --fp16/--int8.")
    @optimization_options
    def command(task: str, model: str | None, random_init: bool, tiny: bool, config_items: tuple[str, ...], seed: int,
                num_labels: int | None, out: Path | None, force: bool, opset: int, max_seq: int | None, no_validate: bool,
                report: Path | None, allow_pickle: bool, trust_remote_code: bool, quiet: bool, precisions: str | None,
                **opt: Any) -> None:
        from .api import export
        from .loading import parse_overrides
        from .publish import check_output_file, write_atomic

        if tiny and not random_init:
            raise BertExportError("--tiny applies to --random-init only")
        if report is not None:
            check_output_file(report, "--report")
        overrides = {**(fam.tiny_config if tiny else {}), **parse_overrides(config_items)}
        try:
            result = export(fam, task, model=model, random_init=random_init, overrides=overrides, seed=seed,
                            num_labels=num_labels, out=out, force=force, opset=opset, max_seq=max_seq,
                            validate=not no_validate, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                            steps=Steps(quiet=quiet), optimization=options_from(opt), precisions=precisions)
        except ParityError as exc:  # keep the evidence: the report is what the user needs to act on
            if report is not None and getattr(exc, "report", None) is not None:
                write_atomic(report, exc.report.dumps() + "\n")
            raise
        if report is not None and result.report is not None:
            write_atomic(report, result.report.dumps() + "\n")

    return command


for _name in FAMILIES:
    cli.add_command(_family_command(_name))


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(RUNTIME_NAMES), default="ort", show_default=True, help="Runtime to check: ort (CPU), ort-cuda, ort-trt, trt.")
@click.option("--threads", type=int, default=None, help="Intra-op threads.")
@click.option("--report", type=click.Path(path_type=Path), default=None, help="Write the parity report JSON here.")
@click.option("--model", "model", default=None, help="Your checkpoint (directory, safetensors): recompute the PyTorch reference on --data.")
@click.option("--allow-pickle", is_flag=True, help="With --model: allow pickle (.bin) weights you trust.")
@report_options
@click.option("--precision", type=click.Choice(PRECISIONS), default=None, help="Which graph of the bundle [its default].")
@click.option("-q", "--quiet", is_flag=True)
def validate(bundle: Path, runtime: str, threads: int | None, report: Path | None, quiet: bool, model: str | None,
             allow_pickle: bool, precision: str | None, **extra: Any) -> None:
    """Verify a bundle's checksums and re-run its parity cases against the stored PyTorch outputs.

    With --model CKPT [--data FILE]: recompute the reference from your checkpoint on your data and
    report the task metric against gold labels of both sides (docs/validation.md).
    """
    from .api import validate as run_validate
    from .publish import check_output_file, write_atomic

    if report is not None:
        check_output_file(report, "--report")
    defaults = {"data": None, "limit": None, "batch": 16, "max_metric_drop": DEFAULT_MAX_METRIC_DROP, "expect_ops": None,
                "junit": None, "markdown": None}
    if model is not None or allow_pickle or any(extra[k] != v for k, v in defaults.items()):
        from .cli_compare import run_validate as run_on_data

        return run_on_data(bundle, model=model, runtime=runtime, threads=threads, report=report, quiet=quiet,
                           allow_pickle=allow_pickle, precision=precision, **extra)
    result = run_validate(bundle, runtime=runtime, threads=threads, steps=Steps(quiet=quiet), precision=precision)
    if report is not None:
        write_atomic(report, result.dumps() + "\n")
    if not quiet:
        console.print(result.table())
    if not result.passed:
        raise ParityError(f"{bundle} fails its {result.precision} gate on {runtime}: {'; '.join(result.failures[:3])}")

from . import cli_bench  # noqa: E402,F401
from . import cli_run  # noqa: E402,F401
from . import cli_serve  # noqa: E402,F401
from . import cli_compare  # noqa: E402,F401


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``kill``, a CI timeout) takes the same path as Ctrl-C: every
    ``finally`` runs, so staging directories are removed and ``--out`` is left as it was."""

    signum = signal.SIGTERM


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code.

    SIGTERM is handled here, in the program, rather than when the library is imported: a
    program that embeds ``bert_export`` keeps its own signal handling.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _main(argv)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> None:
    try:
        code = cli.main(args=argv, prog_name="bert-export", standalone_mode=False)
    except BertExportError as exc:
        _err(str(exc))
        sys.exit(exc.exit_code)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and our SIGTERM) into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            _interrupted(exc.__cause__)
        _err("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        _err(exc.format_message())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _interrupted(exc: BaseException) -> None:
    """Ctrl-C: exit 130; SIGTERM: 143 (128 + the signal, as shells report it)."""
    written = getattr(exc, "bert_export_published", None)
    if written:
        _err(f"interrupted after the bundle was written to {written}")
        sys.exit(128 + signal.SIGTERM if isinstance(exc, Terminated) else 130)
    if isinstance(exc, Terminated):
        _err("interrupted (SIGTERM); nothing was written")
        sys.exit(128 + signal.SIGTERM)
    _err("interrupted; nothing was written")
    sys.exit(130)


def _err(message: str) -> None:
    console.print(f"error: {' '.join(message.split())}", soft_wrap=True, markup=False, highlight=False)


if __name__ == "__main__":
    # `python -m bert_export.exporter.cli`: this file runs as __main__, a second copy of the module;
    # the sub-command modules (run, bench, compare...) register on the importable one, so use that.
    from bert_export.exporter.cli import main as _package_main

    _package_main()
