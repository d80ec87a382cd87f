"""Progress for long steps (rich), on stderr so that ``--json`` output on stdout stays clean."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False)


class Steps:
    """``with steps.step("Exporting"): ...`` shows a spinner, then a done line with the time taken."""

    def __init__(self, quiet: bool = False, console_: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console_ or console
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.quiet:
            yield
        else:
            with self.console.status(f"{title}..."):
                yield
        elapsed = time.perf_counter() - start
        self.timings[title] = round(elapsed, 3)
        if not self.quiet:
            self.console.print(f"[green]✓[/] {title} [dim]({elapsed:.1f} s)[/]")

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)
