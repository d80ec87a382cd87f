"""The OpenVINO target (``--runtime openvino``): an OpenVINO IR beside the standard-ONNX graph.

The ONNX graph gets the standard-ONNX passes (OpenVINO fuses by itself) and stays fp32; the IR
(quantize/openvino.py) is written in the asked precision: fp32, bf16 (a precision hint on the fp32
IR) or int8 (NNCF). The parity gate and the int8 fallback run the IR in OpenVINO with the hint
it ships with. Long inputs are the default: OpenVINO fuses the global layers' attention (SDPA) once
the dead NaN guards are gone, and the local layers are banded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import TensorSpec
from bert_export.quantize.openvino import IR_DIR, IrResult, build_ir, require
from bert_export.quantize.target import Artefact, Target, standard_onnx_passes
from bert_export.runtimes.base import Runner
from bert_export.runtimes.openvino_runner import OpenVinoRunner

if TYPE_CHECKING:
    from bert_export.quantize.pipeline import OptimizeOptions


def gate_runner(
    path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_seq: int, hint: str
) -> Runner:
    """The IR in OpenVINO on the CPU, with the precision hint it ships with."""
    return OpenVinoRunner(path, inputs, outputs, max_seq, precision_hint=hint)


def build(
    onnx_path: Path, out_dir: Path, options: OptimizeOptions, feeds: list[Any], probe: Any | None, seed: int
) -> IrResult:
    """The IR in ``options.precision``; int8 also tries the gate with the bf16 hint (kept where it holds)."""
    bf16_probe = None
    if options.int8 and probe is not None:
        bf16_probe = probe.with_runner(lambda p: gate_runner(p, probe.inputs, probe.outputs, probe.max_seq, "bf16"))
    return build_ir(
        onnx_path,
        out_dir,
        options.precision,
        feeds,
        probe,
        fallback=options.fallback,
        seed=seed,
        budget_s=options.fallback_budget,
        bf16_probe=bf16_probe,
    )


def int8_record(options: OptimizeOptions) -> dict[str, Any]:
    return {"mode": "nncf", "calib_samples": options.calib_samples, "kernel": "OpenVINO int8 (NNCF FakeQuantize)"}


def require_packages(options: OptimizeOptions) -> None:
    require(options.int8)  # openvino, and nncf for int8


TARGET = Target(
    name="openvino",
    title="OpenVINO (standard ONNX, then IR)",
    help="openvino adds an OpenVINO IR (openvino/model.xml) beside the ONNX graph (needs the openvino extra)",
    passes=standard_onnx_passes,
    precisions=("fp32", "bf16", "int8"),
    lacks={"fp16": "OpenVINO has no fp16 math on the CPU; use --bf16 (or fp32, the default)"},
    int8_default="nncf",
    int8_note="OpenVINO quantizes with NNCF (static, calibrated)",
    int8_record=int8_record,
    artefact=Artefact(IR_DIR, build, gate_runner),
    long_inputs=True,
    require=require_packages,
)
