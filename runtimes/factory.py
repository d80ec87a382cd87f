"""Runner construction from a bundle, and the bundle's tokenizer.

The commands name a runtime (``ort``, ...); this is the one place that maps a name to a runner.
Each runner module declares the names it runs as (``RUNTIMES``: ``runtimes.base.Runtime`` entries,
each with its help line and its builder); ``RUNNER_MODULES`` lists the modules, one line each. The
``--runtime`` choices and help of run, validate, bench, serve and compare and ``make_runner`` all
come from ``RUNTIMES``, so adding a runtime is one runner module and one line here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import BertExportError
from bert_export.models.support import check_threads, first_line
from bert_export.runtimes import executorch_runner, openvino_runner, ort_mobile_runner, ort_runner, trt_runner
from bert_export.runtimes.base import Runner, Runtime

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

# One line per runner module, in the order the CLI lists them.
RUNNER_MODULES = (
    ort_runner,  # ONNX Runtime: CPU, CUDA and TensorRT providers
    trt_runner,  # native TensorRT engine
    openvino_runner,  # OpenVINO, CPU
    ort_mobile_runner,  # ONNX Runtime on a bundle's ORT-format (.ort) graph
    executorch_runner,  # ExecuTorch (.pte, XNNPACK), CPU
)
RUNTIMES: dict[str, Runtime] = {r.name: r for module in RUNNER_MODULES for r in module.RUNTIMES}
RUNTIME_NAMES: tuple[str, ...] = tuple(RUNTIMES)
DEFAULT_RUNTIME = ort_runner.OrtRunner.name  # ONNX Runtime on the CPU: runs every bundle, on any machine


def runtime_help() -> str:
    """``name (what runs it)`` for every runtime, for the commands' ``--runtime`` help."""
    return ", ".join(f"{r.name} ({r.summary})" for r in RUNTIMES.values())


def make_runner(bundle: Bundle, runtime: str = DEFAULT_RUNTIME, threads: int | None = None, **options: Any) -> Runner:
    """A runner for ``bundle`` on ``runtime``; ``options``: strict, graph_optimization (none|basic|extended|all),
    trt_profile, rebuild_engine, precision_hint."""
    try:
        entry = RUNTIMES[runtime]
    except KeyError:
        raise BertExportError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}") from None
    return entry.build(bundle, check_threads(threads), **options)


def bundle_tokenizer(bundle: Bundle) -> Any | None:
    """The bundle's tokenizer, built only from the tokenizer files its manifest lists (None without any).

    transformers' loader opens whatever it finds in a directory (an ``added_tokens.json`` dropped
    into a bundle would silently change the ids), so the listed tokenizer files (and config.json),
    each read through the bundle's checks, are copied into a private temporary directory and the
    tokenizer is loaded from there, with remote code refused.
    """
    if not bundle.has_tokenizer:
        return None
    names = list(bundle.manifest["tokenizer"]["files"]) + (["config.json"] if bundle.has_file("config.json") else [])
    with tempfile.TemporaryDirectory(prefix="bert-export-tok-") as tmp:
        for name in names:
            (Path(tmp) / name).write_bytes(bundle.read_bytes(name))
        return load_tokenizer(Path(tmp))


def load_tokenizer(directory: Path) -> Any | None:
    """The Hugging Face fast tokenizer saved in ``directory``, or None when there is none."""
    if not any((directory / f).exists() for f in ("tokenizer.json", "vocab.txt")):
        return None
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        raise BertExportError(f"could not load the tokenizer in {directory}: {first_line(exc, 200)}") from None
