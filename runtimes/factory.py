"""Runner construction from a bundle, and the bundle's tokenizer.

The commands name a runtime (``ort``, ...); this is the one place that maps a name to an
adapter, so adding a backend means adding one entry to ``RUNTIMES``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import BertExportError
from bert_export.models.support import check_threads, first_line
from bert_export.runtimes.base import Runner
from bert_export.runtimes.ort_runner import OrtRunner

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle


def _ort_cpu(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    return OrtRunner(
        bundle.model_path,
        bundle.inputs,
        bundle.outputs,
        bundle.max_seq,
        threads=threads,
        graph_optimization=options.get("graph_optimization", "all"),
        runtime="ort",
        strict=bool(options.get("strict")),
    )


def _ort_gpu(runtime: str) -> Callable[..., Runner]:
    """ONNX Runtime on CUDA / TensorRT providers (falling back, and saying so, where they cannot run)."""

    def factory(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
        from bert_export.runtimes.trt_build import ort_trt_options, resolve_profile

        provider_options = {}
        if runtime == "ort-trt":
            provider_options = ort_trt_options(bundle, resolve_profile(bundle, options.get("trt_profile")))
        return OrtRunner(
            bundle.model_path,
            bundle.inputs,
            bundle.outputs,
            bundle.max_seq,
            threads=threads,
            graph_optimization=options.get("graph_optimization", "all"),
            runtime=runtime,
            strict=bool(options.get("strict")),
            provider_options=provider_options,
        )

    return factory


def _trt(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    from bert_export.runtimes.trt_runner import TrtRunner

    return TrtRunner(bundle, options.get("trt_profile"), rebuild=bool(options.get("rebuild_engine")))


def _openvino(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    """The bundle's OpenVINO IR when it has one (--runtime openvino exports), else its ONNX graph read by
    OpenVINO; the precision hint comes from the manifest (f32 unless the bundle is bf16), or ``precision_hint``."""
    from bert_export.runtimes.openvino_runner import HINTS, OpenVinoRunner, require_openvino

    require_openvino()
    section = (bundle.manifest.get("optimization") or {}).get("openvino")
    hint = options.get("precision_hint") or HINTS.get(bundle.precision, "f32")
    if isinstance(section, dict) and isinstance(section.get("ir"), str) and isinstance(section.get("weights"), str):
        hint = options.get("precision_hint") or str(section.get("precision_hint", hint))
        if hint not in ("f32", "bf16"):
            raise BertExportError(f"bundle {bundle.path}: unknown OpenVINO precision hint {hint!r}; re-export it")
        return OpenVinoRunner(
            bundle.file(section["ir"]),
            bundle.inputs,
            bundle.outputs,
            bundle.max_seq,
            threads=threads,
            precision_hint=hint,
            weights_path=bundle.file(section["weights"]),
        )
    return OpenVinoRunner(
        bundle.model_path, bundle.inputs, bundle.outputs, bundle.max_seq, threads=threads, precision_hint=hint
    )


# Runtime names the commands accept (providers.RUNTIME_NAMES lists the same, without importing this).
RUNTIMES: dict[str, Callable[..., Runner]] = {
    "ort": _ort_cpu,
    "ort-cuda": _ort_gpu("ort-cuda"),
    "ort-trt": _ort_gpu("ort-trt"),
    "trt": _trt,
    "openvino": _openvino,
}


def make_runner(bundle: Bundle, runtime: str = "ort", threads: int | None = None, **options: Any) -> Runner:
    """A runner for ``bundle`` on ``runtime``; ``options``: strict, graph_optimization (none|basic|extended|all),
    trt_profile, rebuild_engine."""
    try:
        factory = RUNTIMES[runtime]
    except KeyError:
        raise BertExportError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}") from None
    return factory(bundle, check_threads(threads), **options)


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
