"""Load, trace to ONNX, check, validate and bundle (the Python API behind the CLI)."""

from .api import ExportResult, export, validate
from .bundle import Bundle, load_bundle

__all__ = ["Bundle", "ExportResult", "export", "load_bundle", "validate"]
