"""``--runtime`` of run, validate, bench, serve and compare: the choices and their help come from the
runtime registry (``runtimes/factory.RUNTIMES``), so a new runner module shows up in every command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bert_export.runtimes.factory import DEFAULT_RUNTIME, RUNTIME_NAMES, runtime_help


class RuntimeChoice(click.Choice):
    """A registered runtime name; anything else is one ``unknown runtime ...`` line naming the choices."""

    def __init__(self) -> None:
        super().__init__(RUNTIME_NAMES)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        self.fail(f"unknown runtime {value!r}; choose one of: {', '.join(RUNTIME_NAMES)}", param, ctx)


def runtime_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--runtime`` with the registered choices; ``what`` starts the help ("Runtime to check")."""
    return click.option(
        "--runtime",
        type=RuntimeChoice(),
        default=DEFAULT_RUNTIME,
        show_default=True,
        help=f"{what}: {runtime_help()}.",
    )
