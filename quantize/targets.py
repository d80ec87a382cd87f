"""The target registry: what ``--runtime`` of the family commands accepts (quantize/target.py says what a target is).

Adding a target (say an ARM/mobile one) is one new module and one line here:

1. ``quantize/target_<name>.py`` declaring ``TARGET = Target(name=..., passes=..., precisions=..., ...)``:
   its graph passes (reuse ``target.standard_onnx_passes`` or write its own), the precisions and
   int8 modes it exports, and, if it writes a model of its own beside the ONNX graph, an
   ``Artefact`` (how it is built, and the runner from ``runtimes/`` its parity gate uses);
2. its module in ``_MODULES`` below.

The export ``--runtime`` choices and help, the option checks (``OptimizeOptions.check``), the
optimizer, the gate and the long-input default then follow from the entry. A target whose models
need a runner that does not exist yet adds that runner in ``runtimes/`` (one module, one line in
``runtimes/factory.RUNNER_MODULES``), which also makes it a ``--runtime`` of run/validate/bench/serve.
"""

from __future__ import annotations

from bert_export.models import BertExportError
from bert_export.quantize import target_executorch, target_openvino, target_ort, target_ort_mobile, target_trt
from bert_export.quantize.target import Target

_MODULES = (
    target_ort,
    target_trt,
    target_openvino,
    target_ort_mobile,
    target_executorch,
)  # one line per target, in the order the CLI lists them

TARGETS: dict[str, Target] = {m.TARGET.name: m.TARGET for m in _MODULES}
DEFAULT_TARGET = target_ort.TARGET.name  # ONNX Runtime: every bundle's graph runs there


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise BertExportError(f"unknown --runtime {name!r} for export; choose one of: {', '.join(TARGETS)}") from None


def target_help() -> str:
    """The export ``--runtime`` help: what each target's bundle gets."""
    return "What the bundle is optimized for: " + "; ".join(t.help for t in TARGETS.values()) + "."


def targets_for(precision: str) -> str:
    """The targets that export ``precision``: ``a/b``."""
    return "/".join(t.name for t in TARGETS.values() if precision in t.precisions)


def int8_mode_help() -> str:
    """Each target's int8 modes and default, for the ``--int8``/``--int8-mode`` help."""
    parts = []
    for t in TARGETS.values():
        default = t.int8_default or "the family's fastest mode that passes the gate"
        if len(t.int8_modes) > 1:
            modes = f"{'/'.join(t.int8_modes)}, default {default}"
        else:
            modes = f"{t.int8_modes[0]} only" if t.int8_modes else f"{default} (no --int8-mode)"
        parts.append(f"{t.name}: {modes}")
    return "; ".join(parts)


def precision_refusal(target: Target, precision: str) -> str:
    """Why ``target`` exports no ``precision``, and which targets do (one error line)."""
    why = target.lacks.get(precision)
    others = targets_for(precision)
    line = f"--runtime {target.name} has no --{precision}" + (f": {why}" if why else "")
    return line + (f"; --{precision} is for --runtime {others}" if others else "")


def int8_mode_refusal(target: Target, mode: str) -> str:
    """Why ``target`` takes no ``--int8-mode mode`` (one error line)."""
    fix = f"use --int8-mode {'/'.join(target.int8_modes)}" if target.int8_modes else "drop --int8-mode"
    note = f": {target.int8_note}" if target.int8_note else ""
    return f"--runtime {target.name} takes no --int8-mode {mode}{note}; {fix}"
