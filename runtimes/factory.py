"""Runner construction from a bundle, and the bundle's tokenizer.

The commands name a runtime (``ort``, ...); this is the one place that maps a name to an
adapter, so adding a backend means adding one entry to ``RUNTIMES``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import BertExportError

from .base import Runner
from .ort_runner import OrtRunner

if TYPE_CHECKING:
    from bert_export.exporter.bundle import Bundle


def _ort_cpu(bundle: Bundle, threads: int | None) -> Runner:
    return OrtRunner(bundle.model_path, bundle.inputs, bundle.outputs, bundle.max_seq, threads=threads)


RUNTIMES: dict[str, Callable[[Any, int | None], Runner]] = {"ort": _ort_cpu}


def make_runner(bundle: Bundle, runtime: str = "ort", threads: int | None = None) -> Runner:
    try:
        factory = RUNTIMES[runtime]
    except KeyError:
        raise BertExportError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}") from None
    return factory(bundle, threads)


def load_tokenizer(directory: Path) -> Any | None:
    """The Hugging Face fast tokenizer saved in ``directory``, or None when there is none."""
    if not any((directory / f).exists() for f in ("tokenizer.json", "vocab.txt")):
        return None
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BertExportError(f"could not load the tokenizer in {directory}: {first[:200]}") from None
