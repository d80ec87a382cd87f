"""The PyTorch reference runner: the model as transformers runs it, in fp32 eager mode."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bert_export.models import TensorSpec
from bert_export.runtimes.base import Outputs, Runner


class TaskGraph(torch.nn.Module):
    """A transformers task model with a fixed signature and a tuple of named outputs.

    This is exactly what the exporter traces, so the reference and the graph cannot drift.
    The signature lists every input name the registry knows; families pass what they declare.
    """

    def __init__(self, model: torch.nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(output_names)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.model(**kwargs, return_dict=True)
        return tuple(out[name] for name in self.output_names)


class TorchRunner(Runner):
    """Runs a ``TaskGraph`` on the CPU (or ``device``) under ``torch.inference_mode``."""

    name = "torch"

    def __init__(
        self,
        graph: TaskGraph,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_seq: int | None = None,
        device: str = "cpu",
    ) -> None:
        super().__init__(inputs, outputs, max_seq)
        self.graph = graph
        self.device = torch.device(device)

    def _activate(self) -> None:
        self.graph.eval().to(self.device)

    def _infer(self, feed: dict[str, np.ndarray]) -> Outputs:
        tensors = {
            k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)).to(self.device) for k, v in feed.items()
        }
        with torch.inference_mode():
            result = self.graph(**tensors)
        return {name: t.float().cpu().numpy() for name, t in zip(self.output_names, result)}
