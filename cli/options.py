"""Click options shared by several commands, each with its bound checked in one place.

``--threads`` is accepted by run, validate, compare, bench and serve; all of them take it from
``threads_option`` so that the bound (1..this machine's cores, ``models.support.check_threads``,
which the Python API applies too) cannot be forgotten by the next command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bert_export.models import BertExportError
from bert_export.models.support import check_threads, max_threads


class Threads(click.ParamType):
    """An intra-op thread count: a whole number from 1 to this machine's CPU cores."""

    name = "threads"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a whole number; pass 1 to {max_threads()}", param, ctx)
        try:
            checked = check_threads(number)
        except BertExportError:
            self.fail(f"{number} is not between 1 and {max_threads()} (this machine's CPU cores)", param, ctx)
        assert checked is not None
        return checked


def threads_option(help: str = "Intra-op threads (CPU) [the runtime's default].") -> Callable[[Any], Any]:
    """``--threads N``: 1..cores, None when not given (the runtime's own default)."""
    return click.option("--threads", type=Threads(), default=None, metavar=f"1..{max_threads()}", help=help)


KEEP_ORDER_HELP = (
    "Batch texts in the order given, fixed-size, not sorted by length under a token budget "
    "(reproducibility studies: int8 results can move within the gate with a text's batch; slower)."
)


def keep_order_option(help: str = KEEP_ORDER_HELP) -> Callable[[Any], Any]:
    """``--keep-order``: every command that batches texts (run, validate --data, compare, bench --file) takes it
    from here, so it means the same everywhere; ``batching_of`` turns it into the API's ``batching`` argument."""
    return click.option("--keep-order", is_flag=True, default=False, help=help)


def batching_of(keep_order: bool) -> str:
    """The Python API's ``batching`` (runtimes/batching.py) for ``--keep-order``."""
    return "input-order" if keep_order else "length"
