"""The deployment bundle: its manifest, and loading it as the untrusted input it is.

A bundle is a directory (see docs/bundle.md): the ONNX graph, ``config.json``, tokenizer files,
``manifest.json``, ``reference.safetensors`` (parity inputs and PyTorch outputs), ``parity.json``
and ``golden.json``. Bundles travel to devices, CI runners and colleagues, so reading one trusts
nothing it says: the manifest is schema-checked first (bundle/manifest.py), and afterwards
only files listed in ``manifest["files"]`` are opened, each inside the bundle directory (no
symbolic link on the way), a regular file (no FIFO or device), of the listed size and sha256.
Publishing a bundle atomically is bundle/publish.py.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bert_export.bundle.manifest import MAX_MANIFEST_BYTES, check_rel_path, strict_json, validate_manifest
from bert_export.models import BertExportError, TensorSpec

SCHEMA_VERSION = 2  # 2: graphs under onnx/ per precision (manifest["graphs"]); 1 is still read (docs/bundle.md)
MANIFEST = "manifest.json"
REFERENCE = "reference.safetensors"
PARITY = "parity.json"
ORT_FORMAT_SUFFIX = ".ort"  # a graph in ONNX Runtime's flatbuffer format (--runtime ort-mobile exports)
ORT_FORMAT_ID = b"ORTM"  # its flatbuffer file identifier (bytes 4..8)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Kept for callers of the reader's name: manifest.json is written by the writer only
    (``bert_export.bundle.publish.write_manifest``)."""
    from bert_export.bundle.publish import write_manifest as write

    return write(directory, manifest)


def open_listed(root: Path, rel: str) -> int:
    """Open ``root/rel`` read-only and return the descriptor, refusing anything but a regular file
    reached without following a symbolic link.

    Each directory component is opened with O_NOFOLLOW relative to its parent (openat), so a
    link anywhere on the way, or a name that leaves the bundle, fails here; the file itself is
    opened with O_NONBLOCK so a FIFO cannot hang the reader, and fstat refuses FIFOs, devices
    and directories. The descriptor, not the path, is then read: nothing can be swapped in
    between the check and the read.
    """
    try:
        check_rel_path(rel)
    except ValueError as exc:
        raise BertExportError(f"bundle {root}: {exc}; re-export it") from None
    parts = rel.split("/")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    dirs: list[int] = []
    try:
        dirs.append(os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
        for part in parts[:-1]:
            dirs.append(os.open(part, flags | getattr(os, "O_DIRECTORY", 0), dir_fd=dirs[-1]))
        fd = os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=dirs[-1])
    except FileNotFoundError:
        raise BertExportError(f"bundle {root} is incomplete: {rel} is missing; re-export it") from None
    except OSError as exc:
        reason = (
            "is or passes through a symbolic link"
            if exc.errno in (errno.ELOOP, errno.ENOTDIR)
            else (exc.strerror or "cannot be opened").lower()
        )
        raise BertExportError(
            f"bundle {root}: {rel} {reason}; a bundle holds regular files only: re-export it"
        ) from None
    finally:
        for d in dirs:
            os.close(d)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise BertExportError(
            f"bundle {root}: {rel} is not a regular file; a bundle holds regular files only: re-export it"
        )
    return fd


def read_listed(root: Path, rel: str, info: dict[str, Any]) -> bytes:
    """The bytes of a listed file, checked against its listed size and sha256 while reading."""
    fd = open_listed(root, rel)
    size = int(info["bytes"])
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size or hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise BertExportError(
            f"bundle {root} was modified after export: {rel} does not match its sha256 in {MANIFEST}; re-export it"
        )
    return data


def hash_listed(root: Path, rel: str, info: dict[str, Any]) -> None:
    """Stream a listed file through sha256 (graphs are hundreds of MB: not held in memory)."""
    fd = open_listed(root, rel)
    size, h, seen = int(info["bytes"]), hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as fh:
        while seen <= size:
            block = fh.read(min(1 << 20, size + 1 - seen))
            if not block:
                break
            h.update(block)
            seen += len(block)
    if seen != size or h.hexdigest() != info["sha256"]:
        raise BertExportError(
            f"bundle {root} was modified after export: {rel} does not match its sha256 in {MANIFEST}; re-export it"
        )


@dataclass
class Bundle:
    """A bundle on disk whose manifest passed the schema (and, from load_bundle, whose files verified).

    ``selected`` is the precision whose graph this handle runs (None: the bundle's default);
    ``precision``, ``graph``, ``model_path`` and ``outputs`` follow it.
    """

    path: Path
    manifest: dict[str, Any]
    selected: str | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in self.manifest["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        specs = self.graph.get("outputs") or self.manifest["outputs"]
        return tuple(TensorSpec(d["name"], d["dtype"], tuple(d["shape"])) for d in specs)

    @property
    def graphs(self) -> dict[str, dict[str, Any]]:
        """Every graph by precision. A schema-1 manifest has one, ``graph``, at its ``precision``."""
        graphs = self.manifest.get("graphs")
        if isinstance(graphs, dict) and graphs:
            return graphs
        m = self.manifest
        return {
            str(m["precision"]): {
                **m["graph"],
                "outputs": m["outputs"],
                **{k: m[k] for k in ("optimization", "parity") if k in m},
            }
        }

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.graphs)

    @property
    def graph(self) -> dict[str, Any]:
        """The selected graph's record (file, files, ops, outputs, optimization, parity)."""
        return self.graphs[self.precision]

    def select(self, precision: str | None) -> Bundle:
        """This bundle running the graph of ``precision`` (None: the default); one-line error when it has none."""
        if precision is None:
            return Bundle(self.path, self.manifest)
        if precision not in self.graphs:
            have = ", ".join(self.graphs)
            raise BertExportError(
                f"bundle {self.path} has no {precision} graph (it has {have}); pick one of those with "
                f"--precision, or re-export with --precisions {have},{precision}"
            )
        return Bundle(self.path, self.manifest, precision)

    def file(self, rel: str) -> Path:
        """The path of ``rel``, a file listed in ``manifest["files"]``; refuses anything else.

        Every reader goes through this (or ``read_bytes``/``read_json``): only listed, regular
        files inside the bundle may be opened. Code that must hand a path to a library (ONNX
        Runtime, TensorRT's parser) gets it from here after ``load_bundle`` verified the file.
        """
        if not self.has_file(rel):
            raise BertExportError(f"bundle {self.path} does not list {rel!r} in {MANIFEST}; re-export it")
        os.close(open_listed(self.path, rel))
        return self.path / rel

    def has_file(self, rel: str) -> bool:
        return rel in self.manifest.get("files", {})

    def read_bytes(self, rel: str) -> bytes:
        """A listed file's bytes, re-checked against its sha256 (small files: configs, tokenizers)."""
        if not self.has_file(rel):
            raise BertExportError(f"bundle {self.path} does not list {rel!r} in {MANIFEST}; re-export it")
        return read_listed(self.path, rel, self.manifest["files"][rel])

    def read_json(self, rel: str) -> Any:
        return strict_json(self.read_bytes(rel), f"{rel} in bundle {self.path}")

    def unlisted_file(self, name: str) -> Path:
        """A file the bundle keeps beside its listed ones (the per-GPU TensorRT engine, which carries
        its own sha256 in ``manifest["tensorrt"]``): a plain name, a regular file, no link."""
        if "/" in name:
            raise BertExportError(f"bundle {self.path}: {name!r} must be a plain file name; re-export it")
        os.close(open_listed(self.path, name))
        return self.path / name

    @property
    def model_path(self) -> Path:
        return self.file(self.graph["file"])

    @property
    def max_seq(self) -> int:
        return int(self.manifest["max_sequence_length"])

    @property
    def precision(self) -> str:
        return self.selected or str(self.manifest["precision"])

    @property
    def has_tokenizer(self) -> bool:
        return bool((self.manifest.get("tokenizer") or {}).get("files"))


def read_manifest(root: Path) -> dict[str, Any]:
    """The schema-checked manifest of the bundle at ``root`` (one-line errors for anything else)."""
    try:
        fd = open_listed(root, MANIFEST)
    except BertExportError:
        if not (root / MANIFEST).exists() and not (root / MANIFEST).is_symlink():
            raise BertExportError(f"{root} is not a bert-export bundle (no {MANIFEST}); re-export it") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise BertExportError(f"{root / MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MB; re-export the bundle")
    raw = strict_json(data, str(root / MANIFEST))
    validate_manifest(raw, str(root / MANIFEST))
    return raw


def load_bundle(path: str | Path, verify: bool = True, precision: str | None = None) -> Bundle:
    """Read a bundle: schema-check its manifest, then (by default) verify every listed file.

    Verification opens each listed file as ``open_listed`` does and checks its size and sha256,
    then checks that no graph refers to external data outside its listed files. ``precision``
    selects the graph the returned handle runs (None: the bundle's default).
    """
    root = Path(path)
    if not root.is_dir():
        raise BertExportError(f"bundle {root} does not exist; export one with `bert-export bert|modernbert --task ...`")
    manifest = read_manifest(root)
    bundle = Bundle(root, manifest).select(precision)
    if verify:
        verify_files(root, manifest["files"])
        for p in bundle.precisions:
            check_graph_references(bundle.select(p))
    return bundle


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    for rel, info in files.items():
        hash_listed(root, rel, info)


def check_graph_references(bundle: Bundle) -> None:
    """Refuse a graph with a tensor whose external data is not one of its listed graph files.

    ONNX Runtime resolves an external-data ``location`` relative to the graph and reads it, so a
    crafted graph could otherwise feed any file the user can read into the model's outputs (an
    unlisted file beside the graph, ``manifest.json``, ``../../home/user/.ssh/id_rsa``). Every
    tensor counts, wherever the model holds it: dense and sparse initializers (values and indices),
    node attributes, subgraphs of If/Loop/Scan at any depth, functions and training graphs
    (``graph_tensors`` walks the whole message, not a list of known places).
    """
    graph = bundle.graph
    if graph["file"].endswith(ORT_FORMAT_SUFFIX):
        check_ort_graph(bundle)
        return
    import onnx

    base = graph["file"].rsplit("/", 1)[0] + "/" if "/" in graph["file"] else ""
    try:
        model = onnx.load_model(str(bundle.model_path), load_external_data=False)
    except Exception:
        raise BertExportError(
            f"{graph['file']} in bundle {bundle.path} is not a readable ONNX graph; re-export the bundle"
        ) from None
    allowed = set(graph["files"])
    for tensor in graph_tensors(model):
        entries = {e.key: e.value for e in tensor.external_data}
        if tensor.data_location != onnx.TensorProto.EXTERNAL and not entries:
            continue
        location = entries.get("location", "")
        try:
            rel = check_rel_path(base + location)
        except ValueError:
            rel = None
        if rel is None or rel not in allowed:
            raise BertExportError(
                f"{graph['file']} in bundle {bundle.path} refers to external data {location!r} "
                f"(tensor {tensor.name[:80]!r}), which is not one of its listed graph files; re-export the bundle"
            )


def check_ort_graph(bundle: Bundle) -> None:
    """Refuse an ORT-format graph that is not one, or that keeps any tensor's data outside the file.

    The ``.ort`` is read through ``Bundle.file`` (listed, no link, a regular file; its sha256 was checked by
    ``verify_files``), then parsed as ONNX Runtime's flatbuffer: the file identifier, and every tensor in the
    graph and its subgraphs (initializers, sparse ones, node attributes) must hold its data inline. Graphs
    bert-export writes never use ORT format's external-data offset, so a file that does is refused rather
    than handed to ONNX Runtime to resolve.
    """
    rel = bundle.graph["file"]
    data = bundle.file(rel).read_bytes()
    bad = BertExportError(f"{rel} in bundle {bundle.path} is not a readable ORT-format graph; re-export the bundle")
    if len(data) < 8 or data[4:8] != ORT_FORMAT_ID:
        raise bad
    try:
        from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

        model = InferenceSession.GetRootAs(data, 0).Model()
        graph = model.Graph() if model is not None else None
        if graph is None:
            raise ValueError("no graph")
        external = next((t for t in ort_tensors(graph) if t.ExternalDataOffset() >= 0), None)
    except Exception:  # a truncated or garbled flatbuffer: any error of the parser
        raise bad from None
    if external is not None:
        name = (external.Name() or b"").decode("utf-8", "replace")[:80]
        raise BertExportError(
            f"{rel} in bundle {bundle.path} keeps tensor {name!r} outside the file (external data); "
            "re-export the bundle"
        )


def ort_tensors(graph: Any, depth: int = 0) -> Iterator[Any]:
    """Every tensor of an ORT-format graph (``fbs.Graph``) and of its subgraphs, at most 64 levels deep."""
    if depth > 64:
        raise ValueError("subgraphs nest too deeply")
    for i in range(graph.InitializersLength()):
        yield graph.Initializers(i)
    for i in range(graph.SparseInitializersLength()):
        sparse = graph.SparseInitializers(i)
        yield from (t for t in (sparse.Values(), sparse.Indices()) if t is not None)
    for i in range(graph.NodesLength()):
        node = graph.Nodes(i)
        for j in range(node.AttributesLength()):
            attr = node.Attributes(j)
            if attr.T() is not None:
                yield attr.T()
            yield from (attr.Tensors(k) for k in range(attr.TensorsLength()))
            if attr.G() is not None:
                yield from ort_tensors(attr.G(), depth + 1)
            for k in range(attr.GraphsLength()):
                yield from ort_tensors(attr.Graphs(k), depth + 1)


def graph_tensors(message: Any) -> Iterator[Any]:
    """Every ``TensorProto`` inside an ONNX protobuf message, at any depth.

    A walk over the message's set fields rather than onnx's own helper, which misses sparse
    initializers and sparse attributes: a tensor in a place this code did not think of is still
    found. Tensors are not descended into (their ``raw_data`` is the weights).
    """
    import onnx

    stack = [message]
    while stack:
        current = stack.pop()
        if isinstance(current, onnx.TensorProto):
            yield current
            continue
        for field, value in current.ListFields():
            if field.message_type is None:
                continue
            map_entry = field.message_type.GetOptions().map_entry  # none in onnx.proto today
            items = value.values() if map_entry else value if field.is_repeated else (value,)
            stack.extend(item for item in items if hasattr(item, "ListFields"))
