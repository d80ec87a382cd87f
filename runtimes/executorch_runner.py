"""ExecuTorch runner (CPU, XNNPACK): the bundle's ``.pte`` program in ExecuTorch's Python runtime.

The program is what an Android/iOS app embeds (docs/edge.md); running it here, through the same
runtime library the app links, is the parity gate of ``--runtime executorch`` exports and what
``run``/``validate``/``bench --runtime executorch`` use. The file is opened only after the bundle's
checks (``Bundle.file``: listed, a regular file inside the bundle, its sha256 verified at load), and
a file ExecuTorch cannot load is one ``error:`` line. Its dynamic batch is bounded at export
(memory is planned for the bound): larger batches are run in slices of ``MAX_BATCH``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bert_export.models import BertExportError, TensorSpec
from bert_export.models.support import first_line
from bert_export.runtimes.base import Outputs, Runner, Runtime

if TYPE_CHECKING:
    from bert_export.bundle.reader import Bundle

INSTALL_HINT = "install the ExecuTorch extra: pip install 'bert-export[executorch]'"
SECTION = "executorch"  # manifest["optimization"][SECTION], and the program's folder in the bundle
PROGRAM = "model.pte"
MAX_BATCH = 8  # the exported program's batch bound: ExecuTorch plans memory for it (benchmarks/edge_executorch.md)


def require_executorch() -> Any:
    """``executorch.runtime``, or one clear error naming the extra."""
    try:
        import executorch.runtime as et_runtime
    except ImportError:
        raise BertExportError(f"--runtime executorch needs the executorch package; {INSTALL_HINT}") from None
    return et_runtime


class ExecuTorchRunner(Runner):
    """Loads a ``.pte`` program and runs its ``forward`` method (inputs in the graph's input order)."""

    name = "executorch"

    def __init__(
        self,
        program_path: str | Path,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_seq: int | None = None,
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        super().__init__(inputs, outputs, max_seq)
        self.program_path = Path(program_path)
        self.max_batch = max_batch
        self.method: Any = None

    def _activate(self) -> None:
        et = require_executorch()
        try:
            program = et.Runtime.get().load_program(self.program_path, verification=et.Verification.InternalConsistency)
            self.method = program.load_method("forward")
        except Exception as exc:  # ExecuTorch raises RuntimeError with its C++ status
            raise BertExportError(
                f"ExecuTorch could not load {self.program_path.name}: {first_line(exc, 200)}; re-export the bundle"
            ) from None
        meta = self.method.metadata
        if meta.num_inputs() != len(self.inputs) or meta.num_outputs() != len(self.outputs):
            self.method = None
            raise BertExportError(
                f"ExecuTorch program {self.program_path.name} does not match its manifest ({meta.num_inputs()} "
                f"inputs, {meta.num_outputs()} outputs; the manifest lists {len(self.inputs)} and "
                f"{len(self.outputs)}); re-export the bundle"
            )

    def _deactivate(self) -> None:
        self.method = None

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        import torch

        batch = next(iter(feed.values())).shape[0]
        parts: list[list[np.ndarray]] = []
        for start in range(0, batch, self.max_batch):
            args = [
                torch.from_numpy(np.ascontiguousarray(feed[s.name][start : start + self.max_batch], dtype=np.int64))
                for s in self.inputs
            ]
            try:
                result = self.method.execute(args)
            except Exception as exc:
                raise BertExportError(
                    f"ExecuTorch failed on {self.program_path.name}: {first_line(exc, 200)}; re-export the bundle"
                ) from None
            parts.append([t.detach().float().numpy() for t in result])
        return {
            name: np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i]
            for i, name in enumerate(self.output_names)
        }

    def provider_report(self) -> dict[str, Any]:
        return {"runtime": self.name, "backend": "XNNPACK", "program": self.program_path.name}


def from_bundle(bundle: Bundle, threads: int | None, **options: Any) -> Runner:
    """The bundle's ExecuTorch program (exported with ``--runtime executorch``), through the bundle's checks."""
    require_executorch()
    # the selected graph's record first (a --precisions bundle has one program per precision)
    optimization = bundle.graph.get("optimization") or bundle.manifest.get("optimization") or {}
    section = optimization.get(SECTION) if isinstance(optimization, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("program"), str):
        raise BertExportError(f"bundle {bundle.path} has no ExecuTorch program; re-export it with --runtime executorch")
    max_batch = section.get("max_batch", MAX_BATCH)
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise BertExportError(f"bundle {bundle.path}: optimization.executorch.max_batch must be >= 1; re-export it")
    return ExecuTorchRunner(
        bundle.file(section["program"]), bundle.inputs, bundle.outputs, bundle.max_seq, max_batch=max_batch
    )


# The runtime names ExecuTorch runs as (runtimes/factory.py collects every runner module's).
RUNTIMES = (Runtime(ExecuTorchRunner.name, "ExecuTorch (.pte, XNNPACK), CPU", from_bundle),)
