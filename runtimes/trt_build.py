"""TensorRT engines for a bundle: optimization profiles, the build, and the build record.

An engine is specific to one TensorRT version and one GPU model, so it cannot be part of the
portable, checksummed set a bundle is verified by (``manifest["files"]``, written at export on
any machine). It lives beside that set instead:

- ``model.engine``: the serialized engine (``IHostMemory`` bytes);
- ``manifest["tensorrt"]``: its build record: ``file``, ``sha256``, ``bytes``,
  ``tensorrt_version``, ``gpu``, ``compute_capability``, ``profile`` ({min, opt, max} as
  [batch, sequence]), ``precision``, ``strongly_typed`` and ``onnx_sha256`` (the graph it was
  built from). The manifest itself is not in ``files``, so adding the record never breaks
  bundle verification; the engine is verified against the record's own sha256 instead.

An engine whose record names another TensorRT version, another GPU, or another graph is refused
with a message that says how to rebuild (``bert-export engine BUNDLE --force``, or
``--rebuild-engine`` on run/validate); a bundle with no engine gets one built on first use.

Every TensorRT object is created only after ``require_gpu()``: without a usable GPU TensorRT
aborts the process (no Python exception), so that check is what makes the failure one line.
TensorRT 10 builds weakly typed networks with precision flags (FP16 for fp16 bundles, INT8+FP16
for QDQ int8 bundles) and TF32 cleared for fp32 (the fp32 parity gate is 1e-4); TensorRT 11
has only strongly typed networks: precision comes from the graph's own types and Q/DQ nodes.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bert_export.models import BertExportError
from bert_export.runtimes.providers import GpuInfo, detect_gpu

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

ENGINE_FILE = "model.engine"
RECORD_KEY = "tensorrt"
DEFAULT_MAX_BATCH = 32
DEFAULT_OPT_SEQ = 128
DEFAULT_OPT_BATCH = 8
WORKSPACE_BYTES = 4 << 30

Shape = tuple[int, int]  # (batch, sequence)


@dataclass(frozen=True)
class Profile:
    """A TensorRT optimization profile for the [batch, sequence] inputs."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, batch: int, seq: int) -> bool:
        return self.min[0] <= batch <= self.max[0] and self.min[1] <= seq <= self.max[1]

    def check(self, batch: int, seq: int) -> None:
        """Refuse a shape outside the profile before TensorRT does (it fails opaquely or not at all)."""
        if not self.contains(batch, seq):
            raise BertExportError(
                f"input of batch {batch} x sequence {seq} is outside the engine's profile {self.describe()}; "
                f"split the batch or rebuild with --trt-profile {self.min[0]}x{self.min[1]},{self.opt[0]}x{self.opt[1]},"
                f"{max(batch, self.max[0])}x{max(seq, self.max[1])}"
            )

    def describe(self) -> str:
        return f"batch {self.min[0]}..{self.max[0]} x sequence {self.min[1]}..{self.max[1]} (opt {self.opt[0]}x{self.opt[1]})"

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Any) -> Profile:
        try:
            return cls(*(tuple(int(v) for v in data[k]) for k in ("min", "opt", "max")))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise BertExportError(f"the engine record's profile {data!r} is malformed; rebuild the engine") from None


def default_profile(max_seq: int) -> Profile:
    """Batch 1..32 (opt 8) x sequence 1..max_seq (opt 128, or max_seq when shorter)."""
    return Profile((1, 1), (DEFAULT_OPT_BATCH, min(DEFAULT_OPT_SEQ, max_seq)), (DEFAULT_MAX_BATCH, max_seq))


_SHAPE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_profile(text: str, max_seq: int) -> Profile:
    """``--trt-profile MIN,OPT,MAX``, each ``BATCHxSEQUENCE``: e.g. ``1x1,8x128,32x512``."""
    parts = text.split(",")
    shapes = [_SHAPE.match(p) for p in parts]
    if len(parts) != 3 or not all(shapes):
        raise BertExportError(
            f"--trt-profile {text!r} is not MIN,OPT,MAX with each BATCHxSEQUENCE; write e.g. --trt-profile 1x1,8x128,32x{max_seq}"
        )
    lo, opt, hi = ((int(m.group(1)), int(m.group(2))) for m in shapes if m)
    profile = Profile(lo, opt, hi)
    if min(lo) < 1:
        raise BertExportError(f"--trt-profile {text!r}: batch and sequence must be >= 1")
    if not (lo[0] <= opt[0] <= hi[0] and lo[1] <= opt[1] <= hi[1]):
        raise BertExportError(f"--trt-profile {text!r}: need MIN <= OPT <= MAX in both batch and sequence")
    if hi[1] > max_seq:
        raise BertExportError(
            f"--trt-profile {text!r}: sequence {hi[1]} exceeds this bundle's maximum of {max_seq}; use at most {max_seq}"
        )
    return profile


def resolve_profile(bundle: Bundle, text: str | None = None) -> Profile:
    """--trt-profile if given, else the engine record's profile, else the manifest default."""
    if text:
        return parse_profile(text, bundle.max_seq)
    record = bundle.manifest.get(RECORD_KEY)
    if isinstance(record, dict) and "profile" in record:
        return Profile.from_json(record["profile"])
    return default_profile(bundle.max_seq)


# --- GPU and module checks (no TensorRT object before these pass) -----------------------------


def require_gpu(what: str = "TensorRT") -> GpuInfo:
    gpu = detect_gpu()
    if not gpu.available:
        raise BertExportError(f"{what} needs an NVIDIA GPU: {gpu.reason}; use --runtime ort (CPU) on this machine")
    return gpu


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer
        raise BertExportError(
            f"TensorRT is not importable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "install it with `pip install bert-export[trt]` on the GPU machine"
        ) from None
    return tensorrt


def trt_major(trt: Any) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except (AttributeError, ValueError):
        return 0


# --- build records -----------------------------------------------------------------------------


def onnx_sha256(bundle: Bundle) -> str | None:
    graph = bundle.graph["file"]  # the selected precision's graph (--precision); the engine is built from it
    return (bundle.manifest.get("files", {}).get(graph) or {}).get("sha256")


def check_record(record: Any, bundle: Bundle, *, trt_version: str, gpu: GpuInfo) -> None:
    """Refuse an engine built for another TensorRT, GPU or graph, with the rebuild command."""
    fix = f"rebuild it with `bert-export engine {bundle.path} --force` (or pass --rebuild-engine)"
    if not isinstance(record, dict) or not {
        "file",
        "sha256",
        "tensorrt_version",
        "gpu",
        "compute_capability",
        "profile",
    } <= set(record):
        raise BertExportError(f"the TensorRT engine record in {bundle.path}/manifest.json is incomplete; {fix}")
    here_cc = gpu.sm
    if (
        record["tensorrt_version"] != trt_version
        or record["gpu"] != gpu.name
        or record["compute_capability"] != here_cc
    ):
        raise BertExportError(
            f"{record['file']} in {bundle.path} was built with TensorRT {record['tensorrt_version']} for {record['gpu']} "
            f"(compute {record['compute_capability']}); this machine has TensorRT {trt_version} on {gpu.name} "
            f"(compute {here_cc}), and engines only run where they were built: {fix}"
        )
    if record.get("onnx_sha256") != onnx_sha256(bundle):
        raise BertExportError(f"{record['file']} in {bundle.path} was built from another model.onnx; {fix}")


def read_engine(bundle: Bundle, record: dict[str, Any]) -> bytes:
    if not (bundle.path / str(record["file"])).exists():
        raise BertExportError(
            f"{bundle.path / str(record['file'])} is missing but manifest.json records it; "
            f"rebuild it with `bert-export engine {bundle.path} --force`"
        )
    path = bundle.unlisted_file(str(record["file"]))  # a plain name, a regular file, no link
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise BertExportError(
            f"{path} does not match its sha256 in manifest.json (modified or truncated); "
            f"rebuild it with `bert-export engine {bundle.path} --force`"
        )
    return data


def make_record(
    bundle: Bundle, data: bytes, *, trt_version: str, gpu: GpuInfo, profile: Profile, strongly_typed: bool
) -> dict[str, Any]:
    return {
        "file": ENGINE_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "tensorrt_version": trt_version,
        "gpu": gpu.name,
        "compute_capability": gpu.sm,
        "profile": profile.to_json(),
        "precision": bundle.precision,
        "strongly_typed": strongly_typed,
        "onnx_sha256": onnx_sha256(bundle),
    }


def save_engine(bundle: Bundle, data: bytes, record: dict[str, Any]) -> None:
    """Store the engine and its record in the bundle, through the bundle writer (the only code that
    writes manifest.json: ``bundle.publish.record_engine``)."""
    from bert_export.bundle.publish import record_engine

    record_engine(bundle.path, record["file"], data, RECORD_KEY, record)
    bundle.manifest[RECORD_KEY] = record


def timing_cache_path(trt_version: str, gpu: GpuInfo) -> Path:
    """One timing cache per TensorRT version and GPU, shared by every bundle (it is keyed by layer)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bert-export" / "tensorrt"
    gpu_name = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name or "gpu").strip("-")
    return root / f"timing-{trt_version}-{gpu_name}-sm{gpu.sm}.cache"


def ort_trt_options(bundle: Bundle, profile: Profile) -> dict[str, dict[str, str]]:
    """ONNX Runtime TensorRT provider options: the same profile, engine and timing caches on disk.

    ONNX Runtime keeps its own engines (keyed by graph and GPU) in a per-user cache, so the
    bundle directory stays exactly as exported.
    """
    names = [s.name for s in bundle.inputs]

    def shapes(shape: Shape) -> str:
        return ",".join(f"{n}:{shape[0]}x{shape[1]}" for n in names)

    root = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "bert-export"
        / "ort-trt"
        / (onnx_sha256(bundle) or "graph")[:16]
    )
    return {
        "TensorrtExecutionProvider": {
            "trt_profile_min_shapes": shapes(profile.min),
            "trt_profile_opt_shapes": shapes(profile.opt),
            "trt_profile_max_shapes": shapes(profile.max),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(root),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(root),
            "trt_fp16_enable": "True" if bundle.precision == "fp16" else "False",
        }
    }


# --- the build -------------------------------------------------------------------------------


def build_engine(
    bundle: Bundle,
    profile: Profile | None = None,
    *,
    timing_cache: Path | None = None,
    save: bool = True,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> tuple[bytes, dict[str, Any]]:
    """Parse the bundle's ONNX, build a serialized engine for ``profile`` and (``save``) store it.

    Returns the engine bytes and its build record. Raises BertExportError (one line) when there
    is no GPU, no TensorRT, a graph TensorRT cannot parse, or a failed build.
    """
    gpu = require_gpu()
    trt = import_tensorrt()
    profile = profile or default_profile(bundle.max_seq)
    if profile.max[1] > bundle.max_seq:
        raise BertExportError(
            f"the TensorRT profile's sequence {profile.max[1]} exceeds this bundle's maximum of {bundle.max_seq}"
        )
    major = trt_major(trt)
    strongly_typed = major >= 11
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    typed_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # 11: accepted, always on
    flags = 1 << int(typed_flag) if strongly_typed and typed_flag is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle.model_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0] if errors else "unknown error"
        raise BertExportError(
            f"TensorRT {trt.__version__} could not parse {bundle.model_path}: {first}; "
            "export the bundle with --runtime trt (standard ONNX ops only)"
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        opt_profile.set_shape(network.get_input(i).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    for flag in precision_flags(trt, bundle.precision, strongly_typed):
        config.set_flag(flag)
    if bundle.precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 matmuls miss the fp32 gate (1e-4)
    cache_path = timing_cache or timing_cache_path(trt.__version__, gpu)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BertExportError(
            f"TensorRT {trt.__version__} failed to build an engine for {bundle.path} (its log above says why); "
            "try a smaller --trt-profile or --runtime ort-trt"
        )
    data = bytes(memoryview(serialized))
    from bert_export.bundle.publish import write_atomic

    try:
        write_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())), "the timing cache")
    except BertExportError:
        pass  # a read-only cache location only costs the next build time
    record = make_record(
        bundle, data, trt_version=trt.__version__, gpu=gpu, profile=profile, strongly_typed=strongly_typed
    )
    if save:
        save_engine(bundle, data, record)
    return data, record


def precision_flags(trt: Any, precision: str, strongly_typed: bool) -> list[Any]:
    """TensorRT 10's weak-typing flags for the bundle's precision; none for strongly typed builds."""
    if strongly_typed:
        return []
    return {"fp16": [trt.BuilderFlag.FP16], "int8": [trt.BuilderFlag.INT8, trt.BuilderFlag.FP16]}.get(precision, [])
