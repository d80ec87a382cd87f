"""Raw outputs of one batch -> per-example predictions the metrics read.

Post-processing is the task's ``metric_prediction`` hook (models/tasks), built on
models/postprocess.py (what ``run`` prints), so the metric measures what users of the bundle get,
not a second decoding of the logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bert_export.evaluation.batches import Item
from bert_export.evaluation.data import Dataset
from bert_export.models import get_task
from bert_export.models.tasks import PostContext
from bert_export.runtimes.cases import Case


class Collector:
    """Accumulates one side's predictions (reference or candidate) batch by batch."""

    def __init__(
        self, task: str, dataset: Dataset, items: list[Item], id2label: Mapping[str, str], pooling: Mapping[str, Any]
    ) -> None:
        self.task, self.dataset, self.items = get_task(task), dataset, items
        self.ctx = PostContext(id2label=dict(id2label), pooling=dict(pooling))
        self.values: dict[int, Any] = {}  # item index -> prediction

    def add(self, case: Case, members: list[int], outputs: Mapping[str, np.ndarray]) -> None:
        for r, k in enumerate(members):
            self.values[k] = self._one(case, r, self.items[k], outputs)

    def _one(self, case: Case, r: int, item: Item, out: Mapping[str, np.ndarray]) -> Any:
        row = {k: v[r] for k, v in out.items()}
        return self.task.metric_prediction(row, item, self.dataset.examples[item.example], case.keep[r], self.ctx)
