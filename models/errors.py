"""The one error type users see.

Every failure a user can cause (bad family, missing model, corrupt bundle, wrong shapes...) is
raised as ``BertExportError`` with a message that names the fix; the CLI prints it as one line
and exits non-zero, without a traceback. Anything else escaping is a bug in bert-export.
"""

from __future__ import annotations


class BertExportError(Exception):
    """A user-facing error: ``str(err)`` is one line that says what is wrong and how to fix it."""

    exit_code = 2


class ParityError(BertExportError):
    """A graph (or engine) does not match the PyTorch reference within its precision's gate."""

    exit_code = 1
    report: object | None = None  # the failing gate's parity report, when one exists (written by --report)
