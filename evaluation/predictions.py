"""Raw outputs of one batch -> per-example predictions the metrics read.

Post-processing is ``runtimes.postprocess`` (what ``run`` prints), so the metric measures what
users of the bundle get, not a second decoding of the logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bert_export.evaluation.batches import Item
from bert_export.evaluation.data import Dataset
from bert_export.runtimes import postprocess as pp
from bert_export.runtimes.cases import Case


class Collector:
    """Accumulates one side's predictions (reference or candidate) batch by batch."""

    def __init__(
        self, task: str, dataset: Dataset, items: list[Item], id2label: Mapping[str, str], pooling: Mapping[str, Any]
    ) -> None:
        self.task, self.dataset, self.items = task, dataset, items
        self.id2label, self.pooling = dict(id2label), dict(pooling)
        self.values: dict[int, Any] = {}  # item index -> prediction

    def add(self, case: Case, members: list[int], outputs: Mapping[str, np.ndarray]) -> None:
        for r, k in enumerate(members):
            self.values[k] = self._one(case, r, self.items[k], outputs)

    def _one(self, case: Case, r: int, item: Item, out: Mapping[str, np.ndarray]) -> Any:
        n = len(item.ids)
        if self.task == "seq-cls":
            return int(np.argmax(np.asarray(out["logits"][r], dtype=np.float32)))
        if self.task == "token-cls":
            return self._word_tags(np.asarray(out["logits"][r, :n], dtype=np.float32), item)
        if self.task == "qa":
            ex = self.dataset.examples[item.example]
            res = pp.qa_result(
                np.asarray(out["start_logits"][r, :n], np.float32),
                np.asarray(out["end_logits"][r, :n], np.float32),
                np.asarray(item.context, bool),
                item.offsets,
                ex.context or "",
            )
            return res["answer"]
        if self.task == "mlm":
            logits = np.asarray(out["logits"][r, item.masked], dtype=np.float32)
            return (
                np.argsort(-logits, axis=-1, kind="stable")[:, :5] if len(item.masked) else np.zeros((0, 5), np.int64)
            )
        hidden = np.asarray(out["last_hidden_state"][r : r + 1], dtype=np.float32)
        return pp.pool(
            hidden,
            case.keep[r : r + 1],
            str(self.pooling.get("mode", "cls")),
            bool(self.pooling.get("normalize", False)),
        )[0]

    def _word_tags(self, logits: np.ndarray, item: Item) -> list[str]:
        """One tag per word: its first sub-token's argmax; words cut off by truncation get ``O``."""
        words = len(self.dataset.examples[item.example].words or [])
        tags = ["O"] * words
        seen: set[int] = set()
        for t, w in enumerate(item.word_ids[: len(logits)]):
            if w is None or w in seen or w >= words:
                continue
            seen.add(w)
            tags[w] = str(self.id2label.get(str(int(np.argmax(logits[t]))), "O"))
        return tags
