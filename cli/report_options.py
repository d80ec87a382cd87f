"""Click options shared by ``validate`` and ``compare``: data, gates and report files.

Kept here (click only, no heavy imports) so that cli/validate.py can decorate ``validate``
without importing the evaluation machinery at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bert_export.cli.paths import OutputFile
from bert_export.evaluation import DEFAULT_MAX_METRIC_DROP


def report_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--data/--limit/--batch, --max-metric-drop, --expect-ops and the report files."""
    options = [
        click.option(
            "--data",
            type=click.Path(path_type=Path),
            default=None,
            help="Your inputs: .txt (a text per line), .jsonl/.csv/.parquet with named columns (docs/validation.md).",
        ),
        click.option("--limit", type=int, default=None, help="Use only the first N rows of --data."),
        click.option(
            "--batch", type=int, default=16, show_default=True, help="Batch size (inputs are bucketed by length)."
        ),
        click.option(
            "--max-metric-drop",
            type=float,
            default=DEFAULT_MAX_METRIC_DROP,
            show_default=True,
            help="Largest allowed drop of the task metric vs the reference, in points (with gold labels).",
        ),
        click.option(
            "--expect-ops",
            type=click.Path(path_type=Path),
            default=None,
            help='Fail when a fused op count drops below this JSON ({"Attention": 6}) or another bundle\'s.',
        ),
        click.option("--junit", type=OutputFile(), default=None, help="Write a JUnit XML report here."),
        click.option("--markdown", type=OutputFile(), default=None, help="Write a Markdown summary here."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
