"""Publishing a bundle directory: staged beside ``--out``, then moved into place.

The export writes into a temporary sibling directory; only a complete bundle replaces ``--out``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bert_export.models import BertExportError


@contextlib.contextmanager
def staged_directory(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success rename it to ``out``, else delete it."""
    out = out.resolve()
    if out.exists() and not force:
        raise BertExportError(f"{out} already exists; pass --force to replace it, or choose another --out")
    if out.exists() and not out.is_dir():
        raise BertExportError(f"{out} exists and is not a directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _publishable(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publishable(directory: Path) -> None:
    """mkdtemp makes 0700 dirs (and some writers 0600 files); a bundle is shared: use the umask."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for p in directory.rglob("*"):
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


