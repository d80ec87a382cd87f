"""Native TensorRT runner: a bundle's ``model.engine`` executed on torch CUDA tensors.

Inputs are copied to the GPU as torch tensors of the engine's own input types; outputs are
allocated by torch at the shapes the execution context reports; ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3`` on torch's current stream run it. torch is the
CUDA allocator here because every user of these bundles already has it; a CPU-only torch is
refused with one line.

Everything that needs no GPU happens before activation: the feed is checked and the shape is
checked against the engine's profile, so a bad request fails the same way on any machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.models import BertExportError
from bert_export.runtimes.base import Feed, Outputs, Runner, Runtime, check_feed
from bert_export.runtimes.trt_build import (
    RECORD_KEY,
    Profile,
    build_engine,
    check_record,
    import_tensorrt,
    read_engine,
    require_gpu,
    resolve_profile,
)

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

log = logging.getLogger("bert_export.runtimes")


def require_cuda_torch() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise BertExportError(
            f"--runtime trt runs on torch CUDA tensors, but this torch ({torch.__version__}) has no CUDA; "
            "install a CUDA build of torch on the GPU machine, or use --runtime ort-trt"
        )
    return torch


def torch_dtype(trt: Any, torch: Any, dtype: Any) -> Any:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    for name, tdtype in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = tdtype
    try:
        return table[dtype]
    except KeyError:
        raise BertExportError(
            f"the engine uses tensor type {dtype}, which bert-export cannot feed; rebuild it from an fp32/fp16 bundle"
        ) from None


class TrtRunner(Runner):
    """Runs a bundle's TensorRT engine; builds it first when the bundle has none (or ``rebuild``)."""

    name = "trt"

    def __init__(
        self,
        bundle: Bundle,
        profile: Profile | str | None = None,
        *,
        rebuild: bool = False,
        timing_cache: Path | None = None,
    ) -> None:
        super().__init__(bundle.inputs, bundle.outputs, bundle.max_seq)
        self.bundle = bundle
        self.rebuild = rebuild or isinstance(profile, (str, Profile)) and self._differs(profile)
        self.profile = profile if isinstance(profile, Profile) else resolve_profile(bundle, profile)
        self.timing_cache = timing_cache
        self.record: dict[str, Any] | None = None
        self._ctx: Any = None

    def _differs(self, profile: Profile | str) -> bool:
        """An explicit profile other than the stored engine's means a rebuild."""
        record = self.bundle.manifest.get(RECORD_KEY)
        wanted = profile if isinstance(profile, Profile) else resolve_profile(self.bundle, profile)
        return not (isinstance(record, dict) and record.get("profile") == wanted.to_json())

    def infer(self, feed: Feed) -> Outputs:
        """Check the feed and the profile first (no GPU needed), then run on the engine."""
        checked = check_feed(feed, self.inputs, self.max_seq)
        batch, seq = next(iter(checked.values())).shape
        self.profile.check(int(batch), int(seq))
        if not self.active:
            self.activate()
        return self._infer(checked)

    def _activate(self) -> None:
        gpu = require_gpu()
        trt = import_tensorrt()
        record: dict[str, Any] | None = self.bundle.manifest.get(RECORD_KEY)
        build = record is None or self.rebuild
        if record is not None and not build:  # refuse a foreign engine before anything else is set up
            check_record(record, self.bundle, trt_version=trt.__version__, gpu=gpu)
        torch = require_cuda_torch()
        if build:
            log.warning(
                "note: building a TensorRT engine for %s (%s); this takes a while once",
                self.bundle.path,
                self.profile.describe(),
            )
            data, record = build_engine(
                self.bundle, self.profile, timing_cache=self.timing_cache, save=self._writable()
            )
        else:
            assert record is not None
            data = read_engine(self.bundle, record)
        self.record = record
        self.profile = Profile.from_json(record["profile"])
        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(data)
        if engine is None:
            raise BertExportError(
                f"TensorRT could not load {self.bundle.path / record['file']}; "
                f"rebuild it with `bert-export engine {self.bundle.path} --force`"
            )
        names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
        wanted = {s.name for s in self.inputs} | set(self.output_names)
        if not wanted <= names:
            raise BertExportError(
                f"the engine's tensors {sorted(names)} do not match the bundle's {sorted(wanted)}; rebuild it"
            )
        context = engine.create_execution_context()
        self._ctx = (trt, torch, engine, context)

    def _writable(self) -> bool:
        import os

        ok = os.access(self.bundle.path, os.W_OK)
        if not ok:
            log.warning("note: %s is read-only; the engine is used for this run and not saved", self.bundle.path)
        return ok

    def _deactivate(self) -> None:
        self._ctx = None

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        trt, torch, engine, context = self._ctx
        device = torch.device("cuda")
        keep = []
        for name, arr in feed.items():
            t = torch.from_numpy(np.ascontiguousarray(arr)).to(
                device, torch_dtype(trt, torch, engine.get_tensor_dtype(name))
            )
            keep.append(t)
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.output_names:
            shape = tuple(context.get_tensor_shape(name))
            outs[name] = torch.empty(shape, dtype=torch_dtype(trt, torch, engine.get_tensor_dtype(name)), device=device)
            context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise BertExportError("TensorRT failed to execute the engine (its log above says why)")
        stream.synchronize()
        return {name: t.float().cpu().numpy() for name, t in outs.items()}


def _from_bundle(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    """The bundle's engine (built, and saved beside the graph, when it has none): ``trt_profile``, ``rebuild_engine``."""
    return TrtRunner(bundle, options.get("trt_profile"), rebuild=bool(options.get("rebuild_engine")))


# The runtime names the native TensorRT runner runs as (runtimes/factory.py collects every runner module's).
RUNTIMES = (Runtime(TrtRunner.name, "TensorRT engine, NVIDIA GPU", _from_bundle, gpu=True),)
