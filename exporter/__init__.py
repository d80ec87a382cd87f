"""Load, trace to ONNX, check, validate and bundle (the Python API behind the CLI)."""

from bert_export.bundle.reader import Bundle, load_bundle
from bert_export.exporter.api import ExportResult, export, validate

__all__ = ["Bundle", "ExportResult", "export", "load_bundle", "validate"]
