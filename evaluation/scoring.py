"""Predictions of both sides + the dataset's gold -> metric rows (reference, candidate, drop).

Each task scores itself (``Task.score``, models/tasks; the metrics are models/metrics.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bert_export.evaluation.batches import Item
from bert_export.evaluation.data import Dataset
from bert_export.evaluation.predictions import Collector
from bert_export.models import get_task


@dataclass
class MetricRow:
    """One metric on the reference and on the candidate; ``drop`` in points (positive = worse)."""

    name: str
    reference: float
    candidate: float

    @property
    def drop(self) -> float:
        return round(100.0 * (self.reference - self.candidate), 6)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reference": self.reference, "candidate": self.candidate, "drop_points": self.drop}


def score(
    task: str, dataset: Dataset, items: list[Item], id2label: Mapping[str, str], ref: Collector, got: Collector
) -> list[MetricRow]:
    """The task's metric rows; empty when the data has no gold."""
    if dataset.gold is None:
        return []
    tsk = get_task(task)
    sides = [tsk.score(dataset, items, c.values, id2label) for c in (ref, got)]
    return [MetricRow(k, sides[0][k], sides[1][k]) for k in sides[0]]
