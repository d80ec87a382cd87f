"""``bert-export``: a thin click layer over ``bert_export.exporter.api``.

One command per registered family (``bert-export bert --task qa ...``), generated from the
registry, plus commands that work on a bundle. Every user error ends as one ``error: ...``
line on stderr and a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from bert_export.models import FAMILIES, BertExportError
from bert_export.models.progress import console


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


def _register() -> None:
    """Every sub-command, added explicitly: the command modules never import this one (no import circle)."""
    from bert_export.cli import bench, compare, export, run, serve, validate
    from bert_export.cli.paths import guard_outputs

    for command in export.family_commands():
        cli.add_command(guard_outputs(command))
    for module in (validate, bench, run, serve, compare):
        for command in module.COMMANDS:
            cli.add_command(guard_outputs(command))  # every output checked against every input first


_register()


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
    # `python -m bert_export.cli.main`: this file runs as __main__, a second copy of the module;
    # the sub-command modules (run, bench, compare...) register on the importable one, so use that.
    from bert_export.cli.main import main as _package_main

    _package_main()
