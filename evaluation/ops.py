"""Fusion regression: fail when a fused op count drops below what a previous build had.

Losing Attention fusion after an onnxscript / onnxruntime upgrade leaves a graph that is still
correct (parity passes) but several times slower; only counting the fused ops catches it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from bert_export.bundle.manifest import MAX_MANIFEST_BYTES, strict_json
from bert_export.evaluation.report import GateResult
from bert_export.models import BertExportError
from bert_export.quantize.fusion import FUSED_OPS


def fused_counts(manifest: dict[str, Any]) -> dict[str, int]:
    """A bundle's fused op counts: the optimizer's record, else the graph's op counts (unoptimized export)."""
    recorded = (manifest.get("optimization") or {}).get("fused_ops")
    if isinstance(recorded, dict):
        return {str(k): int(v) for k, v in recorded.items()}
    ops = (manifest.get("graph") or {}).get("ops") or {}
    return {op: int(ops[op]) for op in FUSED_OPS if ops.get(op)}


def load_expected(source: str | Path) -> tuple[dict[str, int], str]:
    """Expected counts from a JSON file (``{"Attention": 6, ...}`` or a manifest) or another bundle directory."""
    p = Path(source)
    if p.is_dir():
        from bert_export.bundle.reader import load_bundle

        return fused_counts(load_bundle(p).manifest), f"bundle {p}"
    if not p.is_file():
        raise BertExportError(f"--expect-ops {p} does not exist; pass a JSON file of op counts or a bundle directory")
    data = _read_json(p)
    if isinstance(data, dict) and ("optimization" in data or "graph" in data):
        return fused_counts(data), f"manifest {p}"
    if isinstance(data, dict) and isinstance(data.get("fused_ops"), dict):
        data = data["fused_ops"]
    if not isinstance(data, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in data.values()
    ):
        raise BertExportError(
            f'--expect-ops {p} must map op names to counts, e.g. {{"Attention": 6, "SkipLayerNormalization": 12}}'
        )
    return {str(k): int(v) for k, v in data.items()}, str(p)


MAX_EXPECT_BYTES = MAX_MANIFEST_BYTES  # a manifest is the largest file --expect-ops takes


def _read_json(p: Path) -> Any:
    """The file as strict JSON (bundle.manifest.strict_json: bounded size and nesting, no NaN), read
    without hanging on a FIFO: deep nesting used to end in a RecursionError traceback."""
    fix = 'write e.g. {"Attention": 6}'
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BertExportError(f"--expect-ops {p} cannot be read ({(exc.strerror or 'error').lower()})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BertExportError(f"--expect-ops {p} is not a regular file; {fix}")
        data = fh.read(MAX_EXPECT_BYTES + 1)
    if len(data) > MAX_EXPECT_BYTES:
        raise BertExportError(f"--expect-ops {p} is larger than {MAX_EXPECT_BYTES >> 20} MB; {fix}")
    return strict_json(data, f"--expect-ops {p}", fix=fix)


def check_ops(manifest: dict[str, Any], expected: dict[str, int], where: str) -> GateResult:
    """Fails when any op has fewer instances than expected (more is fine: a new fusion)."""
    have = fused_counts(manifest)
    drops = [f"{op} {have.get(op, 0)} < {n} expected" for op, n in sorted(expected.items()) if have.get(op, 0) < n]
    detail = (
        "; ".join(drops)
        if drops
        else ", ".join(f"{op} {have.get(op, 0)}" for op in sorted(expected)) or "no ops expected"
    )
    return GateResult(f"fused ops vs {where}", not drops, detail)
