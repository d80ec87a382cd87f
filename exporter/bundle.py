"""The deployment bundle: writing it atomically, and loading it with every check a consumer needs.

A bundle is a directory (see docs/bundle.md): ``model.onnx`` (+ ``model.onnx.data``),
``config.json``, tokenizer files, ``manifest.json``, ``reference.safetensors`` (parity inputs
and PyTorch outputs) and ``parity.json``. It is built in a temporary sibling directory and
renamed into place, so a failed or interrupted export never leaves a half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bert_export.models import BertExportError, TensorSpec
from bert_export.runtimes.cases import Case

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE = "reference.safetensors"
PARITY = "parity.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file in the bundle (but the manifest) and write manifest.json."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"sha256": sha256(path), "bytes": path.stat().st_size}
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def save_reference(path: Path, cases: list[Case], reference: list[dict[str, np.ndarray]], outputs: tuple[TensorSpec, ...], rows: list[dict[str, np.ndarray]]) -> None:
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


def load_reference(path: Path, input_names: tuple[str, ...]) -> tuple[list[Case], list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """The stored cases, reference outputs and stored-row masks (safetensors: no pickle)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as fh:
        names = json.loads((fh.metadata() or {})["cases"])
        data = {k: fh.get_tensor(k) for k in fh.keys()}
    cases, refs, rows = [], [], []
    for i, name in enumerate(names):
        feed = {n: data[f"{i}/feed/{n}"] for n in input_names if f"{i}/feed/{n}" in data}
        case = Case(name, feed)
        if f"{i}/mlm" in data:
            case.mlm_positions = data[f"{i}/mlm"].astype(bool)
        if f"{i}/context" in data:
            case.context_mask = data[f"{i}/context"].astype(bool)
        cases.append(case)
        refs.append({k.split("/", 2)[2]: v for k, v in data.items() if k.startswith(f"{i}/ref/")})
        rows.append({k.split("/", 2)[2]: v.astype(bool) for k, v in data.items() if k.startswith(f"{i}/rows/")})
    return cases, refs, rows


@dataclass
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in self.manifest["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in self.manifest["outputs"])

    def file(self, rel: str) -> Path:
        """The path of ``rel``, a file listed in ``manifest["files"]``; refuses anything else.

        Every reader goes through this (or ``read_bytes``/``read_json``): a bundle is untrusted
        input, and only listed, checksummed, regular files inside it may be opened.
        """
        if rel not in self.manifest.get("files", {}):
            raise BertExportError(f"bundle {self.path} does not list {rel!r} in {MANIFEST}; re-export it")
        return self.path / rel

    def has_file(self, rel: str) -> bool:
        return rel in self.manifest.get("files", {})

    def read_bytes(self, rel: str) -> bytes:
        return self.file(rel).read_bytes()

    def read_json(self, rel: str) -> Any:
        try:
            return json.loads(self.read_bytes(rel).decode("utf-8"))
        except (ValueError, RecursionError):
            raise BertExportError(f"{rel} in bundle {self.path} is not valid JSON; re-export the bundle") from None

    @property
    def model_path(self) -> Path:
        return self.file(self.manifest["graph"]["file"])

    @property
    def max_seq(self) -> int:
        return int(self.manifest["max_sequence_length"])

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def has_tokenizer(self) -> bool:
        return bool(self.manifest.get("tokenizer", {}).get("files"))


def load_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read a bundle's manifest and (by default) verify its schema and every file's checksum."""
    root = Path(path)
    if not root.is_dir():
        raise BertExportError(f"bundle {root} does not exist; export one with `bert-export bert|modernbert --task ...`")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BertExportError(f"{root} is not a bert-export bundle (no {MANIFEST}); re-export it")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BertExportError(f"{mpath} is not valid JSON (truncated or edited); re-export the bundle") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise BertExportError(f"{root} has manifest schema_version {version!r}; this bert-export reads version {SCHEMA_VERSION}: re-export the bundle")
    for key in ("family", "task", "precision", "inputs", "outputs", "graph", "files", "max_sequence_length"):
        if key not in manifest:
            raise BertExportError(f"{mpath} lacks {key!r}; the bundle is incomplete: re-export it")
    if verify:
        verify_files(root, manifest["files"])
    return Bundle(root, manifest)


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    for rel, info in files.items():
        p = root / rel
        if not p.is_file():
            raise BertExportError(f"bundle {root} is incomplete: {rel} is missing; re-export it")
        if p.stat().st_size != info.get("bytes") or sha256(p) != info.get("sha256"):
            raise BertExportError(f"bundle {root} was modified after export: {rel} does not match its sha256 in {MANIFEST}; re-export it")
