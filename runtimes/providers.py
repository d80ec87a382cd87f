"""Which ONNX Runtime execution providers a runtime name asks for, and which ones can really run.

``onnxruntime.get_available_providers()`` reports what the installed wheel was *built* with:
onnxruntime-gpu lists TensorRT and CUDA on a machine with no GPU at all, and ONNX Runtime then
quietly falls back to the CPU at session creation. So we look for a usable GPU ourselves (the
CUDA driver API through ctypes: no torch, no subprocess), plan the providers from that, and
afterwards trust only ``session.get_providers()``: the report says what actually ran.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from bert_export.models import BertExportError

log = logging.getLogger("bert_export.runtimes")

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_PROVIDERS = frozenset({CUDA, TRT})

# Preference order per runtime name; each falls back along its own list, ending on the CPU.
ORT_RUNTIMES: dict[str, tuple[str, ...]] = {
    "ort": (CPU,),
    "ort-cuda": (CUDA, CPU),
    "ort-trt": (TRT, CUDA, CPU),
}

# What each runs on, for the --runtime help (runtimes/factory.py collects every runner module's names).
ORT_SUMMARIES: dict[str, str] = {
    "ort": "ONNX Runtime, CPU",
    "ort-cuda": "ONNX Runtime's CUDA provider, with CPU fallback",
    "ort-trt": "ONNX Runtime's TensorRT provider, with CUDA/CPU fallback",
}

# Set to 1 to treat the machine as GPU-less (tests; or to pin a job to the CPU).
NO_GPU_ENV = "BERT_EXPORT_NO_GPU"


@dataclass(frozen=True)
class GpuInfo:
    """The first CUDA device as the driver sees it, or why there is none."""

    available: bool
    name: str | None = None
    compute_capability: tuple[int, int] | None = None
    count: int = 0
    reason: str = ""

    @property
    def sm(self) -> str | None:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}" if self.compute_capability else None


_CC_MAJOR, _CC_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}


@functools.lru_cache(maxsize=1)
def detect_gpu() -> GpuInfo:
    """Ask the CUDA driver (libcuda) for device 0; never raises.

    The driver API answers without creating a context for a library (unlike TensorRT or ONNX
    Runtime's CUDA provider, which abort or silently fall back), and it is present wherever a
    GPU can be used at all, whatever Python packages are installed.
    """
    if os.environ.get(NO_GPU_ENV, "") not in ("", "0"):
        return GpuInfo(False, reason=f"{NO_GPU_ENV} is set")
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return GpuInfo(False, reason="no NVIDIA driver (libcuda.so.1 not found)")
    try:
        if cuda.cuInit(0) != 0:
            return GpuInfo(False, reason="the NVIDIA driver found no usable GPU (cuInit failed)")
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return GpuInfo(False, reason="the NVIDIA driver reports no GPU")
        dev = ctypes.c_int(0)
        cuda.cuDeviceGet(ctypes.byref(dev), 0)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
        return GpuInfo(True, name.value.decode(errors="replace"), (major.value, minor.value), count.value)
    except (AttributeError, OSError) as exc:  # a stub or broken libcuda
        return GpuInfo(False, reason=f"the NVIDIA driver is unusable ({exc})")


@dataclass
class ProviderPlan:
    """What a runtime asked for, what we will hand ONNX Runtime, and why anything was dropped."""

    runtime: str
    requested: tuple[str, ...]
    planned: list[str]
    notes: list[str] = field(default_factory=list)
    active: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        return bool(self.active) and self.active[0] != self.requested[0]

    def report(self) -> dict[str, Any]:
        """JSON-able: requested order, the providers the session really got, and the reasons."""
        return {
            "runtime": self.runtime,
            "requested": list(self.requested),
            "active": list(self.active),
            "fallback": self.fell_back,
            "notes": list(self.notes),
        }


def plan_providers(
    runtime: str, available: list[str] | None = None, gpu: GpuInfo | None = None, strict: bool = False
) -> ProviderPlan:
    """Providers for ``runtime``, minus those that cannot run here (no GPU, not in this wheel).

    With ``strict`` a runtime whose first choice cannot run is an error instead of a fallback.
    """
    if runtime not in ORT_RUNTIMES:
        raise BertExportError(f"unknown ONNX Runtime runtime {runtime!r}; choose one of: {', '.join(ORT_RUNTIMES)}")
    requested = ORT_RUNTIMES[runtime]
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    plan = ProviderPlan(runtime, requested, list(requested))
    if any(p in GPU_PROVIDERS for p in requested):
        gpu = gpu or detect_gpu()
        if not gpu.available:
            plan.planned = [p for p in plan.planned if p not in GPU_PROVIDERS]
            plan.notes.append(f"{runtime}: {gpu.reason}; running on the CPU")
    missing = [p for p in plan.planned if p not in available]
    if missing:
        plan.planned = [p for p in plan.planned if p in available]
        plan.notes.append(
            f"{runtime}: this onnxruntime has no {', '.join(missing)} (install bert-export[gpu], "
            f"i.e. onnxruntime-gpu, in place of onnxruntime); running on {plan.planned[0] if plan.planned else 'nothing'}"
        )
    if not plan.planned:
        raise BertExportError(f"{runtime}: no usable ONNX Runtime provider ({'; '.join(plan.notes)})")
    if strict and plan.planned[0] != requested[0]:
        raise BertExportError(
            f"{plan.notes[-1].split(';')[0]}; {requested[0]} cannot run here (drop --strict-runtime to fall back)"
        )
    return plan


def settle(plan: ProviderPlan, active: list[str], strict: bool = False) -> ProviderPlan:
    """Record the providers the session really got; note (or, strict, refuse) a silent fallback."""
    plan.active = list(active)
    if plan.planned and active and active[0] != plan.planned[0]:
        msg = (
            f"{plan.runtime}: ONNX Runtime could not start {plan.planned[0]} (missing CUDA/cuDNN/TensorRT "
            f"libraries?); running on {active[0]}"
        )
        if strict:
            raise BertExportError(msg.replace("; running on", "; it would have run on"))
        plan.notes.append(msg)
    for note in plan.notes:
        log.warning("note: %s", note)
    return plan
