"""bert_export.runtimes"""

from bert_export.runtimes.ort_telemetry import default_off as _telemetry_default_off

_telemetry_default_off()  # before any module here imports onnxruntime: see ort_telemetry.py
