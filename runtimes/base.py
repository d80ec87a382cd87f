"""One small runtime interface (after Polygraphy's runners): activate, infer a feed dict, return
named outputs. The parity harness, ``run`` and ``bench`` talk to runners only through this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bert_export.models import BertExportError, TensorSpec

Feed = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


class Runner(ABC):
    """A backend that runs one graph. Use as a context manager, or call activate()/deactivate()."""

    name: str = "runner"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], max_seq: int | None) -> None:
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.max_seq = max_seq
        self.active = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def activate(self) -> None:
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, feed: Feed) -> Outputs:
        """Check the feed against the graph's declared inputs, then run it."""
        if not self.active:
            self.activate()
        return self._infer(check_feed(feed, self.inputs, self.max_seq))

    @abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        return None

    @abstractmethod
    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs: ...


_INT_KINDS = {"int64": np.int64, "int32": np.int32}


def check_feed(feed: Feed, inputs: Sequence[TensorSpec], max_seq: int | None) -> dict[str, np.ndarray]:
    """Validate names, dtypes, ranks and lengths before a backend sees them.

    Backends fail on bad feeds in their own ways (ONNX Runtime with a long C++ message, TensorRT
    sometimes not at all); one check here gives every runner the same clear error.
    """
    names = [spec.name for spec in inputs]
    missing = [n for n in names if n not in feed]
    extra = [n for n in feed if n not in names]
    if missing or extra:
        raise BertExportError(
            f"feed has inputs {sorted(feed)}, the graph takes {names}"
            + (f" (missing {missing})" if missing else "")
            + (f" (unexpected {extra})" if extra else "")
        )
    out: dict[str, np.ndarray] = {}
    shape0: tuple[int, ...] | None = None
    for spec in inputs:
        arr = np.asarray(feed[spec.name])
        if arr.dtype.kind not in "iu":
            raise BertExportError(
                f"input {spec.name!r} has dtype {arr.dtype}; it must hold integer token data ({spec.dtype})"
            )
        if arr.ndim != len(spec.axes):
            raise BertExportError(
                f"input {spec.name!r} has rank {arr.ndim} (shape {arr.shape}); expected rank {len(spec.axes)} [batch, sequence]"
            )
        if 0 in arr.shape:
            raise BertExportError(
                f"input {spec.name!r} has an empty dimension (shape {arr.shape}); batch and sequence must be >= 1"
            )
        if shape0 is None:
            shape0 = arr.shape
        elif arr.shape != shape0:
            raise BertExportError(
                f"input {spec.name!r} has shape {arr.shape} but {names[0]!r} has {shape0}; all inputs must share [batch, sequence]"
            )
        if max_seq is not None and arr.shape[1] > max_seq:
            raise BertExportError(
                f"sequence length {arr.shape[1]} exceeds this bundle's maximum of {max_seq}; truncate the input or re-export with a larger --max-seq"
            )
        out[spec.name] = arr.astype(_INT_KINDS.get(spec.dtype, np.int64), copy=False)
    return out


@dataclass(frozen=True)
class Runtime:
    """A name that ``--runtime`` of run/validate/bench/serve/compare accepts, and how it builds a runner.

    Each runner module declares its names (``RUNTIMES``, a tuple of these); ``runtimes/factory.py``
    lists the runner modules, so the CLI choices, their help and ``make_runner`` come from one place."""

    name: str
    summary: str  # the --runtime help: what runs it, where ("ONNX Runtime, CPU")
    build: Callable[..., Runner]  # (bundle, threads, **options) -> Runner
    gpu: bool = False  # runs on an NVIDIA GPU (bench compares it with PyTorch on CUDA)
    # ``infer`` may be called from several threads at once on one runner (ONNX Runtime's ``InferenceSession.run``
    # is); ``serve``'s model instances then overlap their inference, and otherwise take turns at it.
    concurrent_infer: bool = False
