"""Predictions of both sides + the dataset's gold -> metric rows (reference, candidate, drop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bert_export.evaluation import metrics as m
from bert_export.evaluation.batches import Item
from bert_export.evaluation.data import Dataset
from bert_export.evaluation.predictions import Collector
from bert_export.models import BertExportError


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


def label_ids(dataset: Dataset, id2label: Mapping[str, str]) -> list[int]:
    """seq-cls gold as label ids: names through the bundle's id2label, or ids as given."""
    label2id = {str(v): int(k) for k, v in id2label.items()}
    out = []
    for i, ex in enumerate(dataset.examples):
        value = ex.label
        if isinstance(value, str) and value in label2id:
            out.append(label2id[value])
            continue
        try:
            k = int(value)
        except (TypeError, ValueError):
            k = -1
        if str(k) not in id2label or (isinstance(value, float) and value != k):
            known = ", ".join(f"{k}={v}" for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))
            raise BertExportError(
                f"--data {dataset.path} row {i + 1}: label {value!r} is not one of this bundle's labels ({known})"
            )
        out.append(k)
    return out


def check_tags(dataset: Dataset, id2label: Mapping[str, str]) -> None:
    """token-cls gold tags must be the bundle's label names, or no entity can ever match."""
    known = {str(v) for v in id2label.values()}
    for i, ex in enumerate(dataset.examples):
        bad = [t for t in ex.labels or () if t not in known]
        if bad:
            raise BertExportError(
                f"--data {dataset.path} row {i + 1}: tag {bad[0]!r} is not one of this bundle's labels "
                f"({', '.join(sorted(known))})"
            )


def score(
    task: str, dataset: Dataset, items: list[Item], id2label: Mapping[str, str], ref: Collector, got: Collector
) -> list[MetricRow]:
    """The task's metric rows; empty when the data has no gold."""
    if dataset.gold is None:
        return []
    sides = [_score_side(task, dataset, items, id2label, c.values) for c in (ref, got)]
    return [MetricRow(k, sides[0][k], sides[1][k]) for k in sides[0]]


def _score_side(
    task: str, dataset: Dataset, items: list[Item], id2label: Mapping[str, str], values: dict[int, Any]
) -> dict[str, float]:
    ex = dataset.examples
    if task == "seq-cls":
        gold, pred = label_ids(dataset, id2label), [values[k] for k in range(len(items))]
        return {
            "accuracy": m.accuracy(gold, pred),
            "macro_f1": m.macro_f1(gold, pred, sorted(int(k) for k in id2label)),
        }
    if task == "token-cls":
        f = m.entity_f1([e.labels or [] for e in ex], [values[k] for k in range(len(items))])
        return {"entity_f1": f["f1"], "entity_precision": f["precision"], "entity_recall": f["recall"]}
    if task == "qa":
        return m.squad([values[k] for k in range(len(items))], [e.answers or [] for e in ex])
    if task == "mlm":
        gold = np.array([g for it in items for g in it.gold_ids], dtype=np.int64)
        ranked = np.concatenate([values[k] for k in range(len(items))]) if items else np.zeros((0, 5), np.int64)
        return m.topk_accuracy(gold, ranked)
    # embed pairs: items come in (sentence1, sentence2) order per example
    vec: dict[tuple[int, int], np.ndarray] = {(it.example, it.part): values[k] for k, it in enumerate(items)}
    sims = [float(_cos(vec[(i, 0)], vec[(i, 1)])) for i in range(len(ex))]
    return {"spearman": m.spearman(sims, [e.score for e in ex])}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / max(np.linalg.norm(a64) * np.linalg.norm(b64), 1e-12))
