"""The optimizer's options on every family command (``bert-export bert --int8 ...``).

Kept here so the family command in cli/export.py only gains one decorator and one argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from bert_export.quantize.fallback import DEFAULT_BUDGET_S
from bert_export.quantize.pipeline import DEFAULT_CALIB_SAMPLES, OptimizeOptions
from bert_export.quantize.targets import DEFAULT_TARGET, TARGETS, int8_mode_help, target_help, targets_for

_OPTIONS = (
    click.option(
        "--runtime",
        "opt_runtime",
        type=click.Choice(list(TARGETS)),
        default=DEFAULT_TARGET,
        show_default=True,
        help=target_help(),
    ),
    click.option("--no-optimize", "opt_no_optimize", is_flag=True, help="Skip the fusions (ship the plain export)."),
    click.option("--fp16", "opt_fp16", is_flag=True, help="FP16 weights and math; inputs/outputs keep their types."),
    click.option("--fp16-io", "opt_fp16_io", is_flag=True, help="With --fp16: float16 outputs too."),
    click.option(
        "--bf16",
        "opt_bf16",
        is_flag=True,
        help=f"With --runtime {targets_for('bf16')}: bf16 math (a precision hint; its own gate, looser than fp32's).",
    ),
    click.option(
        "--int8",
        "opt_int8",
        is_flag=True,
        help="INT8 weights and matrix multiplies (each target's modes: see --int8-mode).",
    ),
    click.option(
        "--int8-mode",
        "opt_int8_mode",
        type=click.Choice(["dynamic", "static"]),
        default=None,
        help="dynamic: activations quantized at run time; static: QDQ with calibrated ranges. "
        f"Per --runtime: {int8_mode_help()}.",
    ),
    click.option(
        "--calib-samples",
        "opt_calib_samples",
        type=int,
        default=DEFAULT_CALIB_SAMPLES,
        show_default=True,
        help="Calibration sentences (bundle tokenizer) for static INT8 and the fallback's sensitivity.",
    ),
    click.option(
        "--no-fallback",
        "opt_no_fallback",
        is_flag=True,
        help="Do not keep sensitive nodes in fp32 when fp16/int8 fails the parity gate.",
    ),
    click.option(
        "--fallback-budget",
        "opt_fallback_budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        show_default=True,
        help="Seconds the accuracy fallback may search; then the best passing choice so far is kept "
        "(or every candidate, if none passed yet).",
    ),
    click.option(
        "--int8-per-tensor",
        "opt_int8_per_tensor",
        is_flag=True,
        help="Dynamic INT8: move the MatMuls the gate allows to ONNX Runtime's fused per-tensor kernel "
        "(DynamicQuantizeMatMul; ~12% faster on BERT-base). Its rounding differs between ONNX Runtime "
        "releases (1.30 vs 1.32: cosine 0.997), so the gate holds for the exporting release only.",
    ),
    click.option(
        "--dense-local-attention",
        "opt_dense_local",
        is_flag=True,
        help="ModernBERT: keep the sliding-window layers dense (masked full attention) instead of the "
        "banded O(n·w) rewrite; for comparison only.",
    ),
)


def optimization_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator adding the optimizer's options (all named ``opt_*``)."""
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def options_from(kwargs: dict[str, Any]) -> OptimizeOptions:
    """Pop the ``opt_*`` values from a command's kwargs into ``OptimizeOptions``."""
    return OptimizeOptions(
        runtime=kwargs.pop("opt_runtime"),
        optimize=not kwargs.pop("opt_no_optimize"),
        fp16=kwargs.pop("opt_fp16"),
        fp16_io=kwargs.pop("opt_fp16_io"),
        bf16=kwargs.pop("opt_bf16"),
        int8=kwargs.pop("opt_int8"),
        int8_mode=kwargs.pop("opt_int8_mode"),
        calib_samples=kwargs.pop("opt_calib_samples"),
        fallback=not kwargs.pop("opt_no_fallback"),
        fallback_budget=kwargs.pop("opt_fallback_budget"),
        banded_attention=not kwargs.pop("opt_dense_local"),
        per_tensor=kwargs.pop("opt_int8_per_tensor"),
    )
