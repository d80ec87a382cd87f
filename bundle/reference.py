"""Parity cases as stored in a bundle: ``reference.safetensors`` (the inputs every graph is checked
on, and PyTorch's outputs for them), read back as the untrusted input it is.

``Case`` lives here, with its storage, so that the bundle layer needs nothing from the runtimes;
``runtimes/cases.py`` builds cases from text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.bundle.manifest import MAX_MANIFEST_BYTES, strict_json
from bert_export.models import BertExportError, TensorSpec

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

REFERENCE = "reference.safetensors"


@dataclass
class Case:
    """One batch: its feed, which positions are real tokens, and (mlm) which were masked."""

    name: str
    feed: dict[str, np.ndarray]
    mlm_positions: np.ndarray | None = None
    context_mask: np.ndarray | None = None  # qa: positions inside the context
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def keep(self) -> np.ndarray:
        return self.feed["attention_mask"].astype(bool)

    @property
    def shape(self) -> tuple[int, int]:
        b, s = self.feed["input_ids"].shape
        return int(b), int(s)


def save_reference(
    path: Path,
    cases: list[Case],
    reference: list[dict[str, np.ndarray]],
    outputs: tuple[TensorSpec, ...],
    rows: list[dict[str, np.ndarray]],
) -> None:
    """Store parity inputs and PyTorch outputs (vocab-sized outputs only at ``rows``) as safetensors."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for i, (case, ref) in enumerate(zip(cases, reference)):
        for name, arr in case.feed.items():
            tensors[f"{i}/feed/{name}"] = np.ascontiguousarray(arr)
        if case.mlm_positions is not None:
            tensors[f"{i}/mlm"] = case.mlm_positions.astype(np.uint8)
        if case.context_mask is not None:
            tensors[f"{i}/context"] = case.context_mask.astype(np.uint8)
        for spec in outputs:
            arr = ref[spec.name]
            if spec.name in rows[i]:
                tensors[f"{i}/rows/{spec.name}"] = rows[i][spec.name].astype(np.uint8)
                arr = arr[rows[i][spec.name]]
            tensors[f"{i}/ref/{spec.name}"] = np.ascontiguousarray(arr, dtype=np.float32)
    save_file(tensors, str(path), metadata={"cases": json.dumps([c.name for c in cases])})


MAX_CASES = 256


def load_reference(bundle: Bundle) -> tuple[list[Case], list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The stored cases, reference outputs and stored-row masks, checked before anything runs them.

    safetensors (no pickle) read from the verified bytes; the header's metadata is parsed as
    strict JSON here because a forged header would otherwise surface as a library exception.
    Every case must feed every graph input with 2-D integer arrays of one shape within the
    bundle's limits, token ids inside the vocabulary and 0/1 masks; every reference must be
    finite and non-empty, so a NaN reference or an empty case list can never "pass".
    """
    from safetensors.numpy import load as load_tensors

    if not bundle.has_file(REFERENCE):
        raise BertExportError(
            f"{bundle.path} has no {REFERENCE} (exported with --no-validate); re-export it with validation"
        )
    data = bundle.read_bytes(REFERENCE)
    where = f"{REFERENCE} in bundle {bundle.path}"
    names = _reference_names(data, where)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise BertExportError(
            f"{where} is not a valid safetensors file ({' '.join(str(exc).split())[:100]}); re-export the bundle"
        ) from None
    cases, refs, rows = [], [], []
    for i, name in enumerate(names):
        case = _reference_case(bundle, tensors, i, name, where)
        cases.append(case)
        refs.append(_reference_outputs(bundle, tensors, i, case, where))
        rows.append({k.split("/", 2)[2]: v.astype(bool) for k, v in tensors.items() if k.startswith(f"{i}/rows/")})
        for out, mask in rows[-1].items():
            if mask.shape != case.shape or int(mask.sum()) != refs[-1][out].shape[0]:
                raise BertExportError(
                    f"{where}: case {i} stores rows of {out} that do not match its inputs; re-export the bundle"
                )
    return cases, refs, rows


def _reference_names(data: bytes, where: str) -> list[str]:
    if len(data) < 8:
        raise BertExportError(f"{where} is truncated; re-export the bundle")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > MAX_MANIFEST_BYTES:
        raise BertExportError(f"{where} has a corrupt header; re-export the bundle")
    header = strict_json(data[8 : 8 + size], where)
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    try:
        names = (
            json.loads(meta["cases"], parse_constant=float)
            if isinstance(meta, dict) and isinstance(meta.get("cases"), str)
            else None
        )
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= 200 for n in names):
        raise BertExportError(f"{where} lacks its list of case names; re-export the bundle")
    if not 1 <= len(names) <= MAX_CASES:
        raise BertExportError(f"{where} holds {len(names)} cases; a bundle stores 1 to {MAX_CASES}: re-export it")
    return names


def _reference_case(bundle: Bundle, tensors: dict[str, np.ndarray], i: int, name: str, where: str) -> Case:
    vocab = (bundle.manifest.get("config") or {}).get("vocab_size")
    feed, shape = {}, None
    for spec in bundle.inputs:
        arr = tensors.get(f"{i}/feed/{spec.name}")
        if arr is None or arr.ndim != 2 or arr.dtype.kind not in "iu" or 0 in arr.shape:
            raise BertExportError(f"{where}: case {i} ({name}) lacks a 2-D integer {spec.name}; re-export the bundle")
        if shape is not None and arr.shape != shape:
            raise BertExportError(f"{where}: case {i} ({name}) has inputs of different shapes; re-export the bundle")
        shape = arr.shape
        feed[spec.name] = arr.astype(np.int32 if spec.dtype == "int32" else np.int64)
    assert shape is not None
    if shape[1] > bundle.max_seq or shape[0] > 4096:
        raise BertExportError(
            f"{where}: case {i} ({name}) has shape {shape}, beyond the bundle's {bundle.max_seq} tokens; re-export the bundle"
        )
    ids = feed.get("input_ids")
    if ids is not None and (ids.min() < 0 or (isinstance(vocab, int) and ids.max() >= vocab)):
        raise BertExportError(f"{where}: case {i} ({name}) has token ids outside the vocabulary; re-export the bundle")
    for key in ("attention_mask", "token_type_ids"):
        if key in feed and not np.isin(feed[key], (0, 1)).all():
            raise BertExportError(
                f"{where}: case {i} ({name}) has {key} values other than 0 and 1; re-export the bundle"
            )
    case = Case(name, feed)
    for key, attr in (("mlm", "mlm_positions"), ("context", "context_mask")):
        arr = tensors.get(f"{i}/{key}")
        if arr is not None:
            if arr.shape != shape:
                raise BertExportError(
                    f"{where}: case {i} ({name}) has a {key} mask of the wrong shape; re-export the bundle"
                )
            setattr(case, attr, arr.astype(bool))
    return case


def _reference_outputs(
    bundle: Bundle, tensors: dict[str, np.ndarray], i: int, case: Case, where: str
) -> dict[str, np.ndarray]:
    refs = {}
    for spec in bundle.outputs:
        arr = tensors.get(f"{i}/ref/{spec.name}")
        if arr is None or arr.dtype.kind != "f" or arr.size == 0:
            raise BertExportError(f"{where}: case {i} has no reference for {spec.name}; re-export the bundle")
        if not np.isfinite(arr).all():
            raise BertExportError(
                f"{where}: case {i}'s reference for {spec.name} is not finite (NaN or inf); re-export the bundle"
            )
        refs[spec.name] = arr
    return refs
