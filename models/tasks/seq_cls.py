"""seq-cls: sequence classification, one label per text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tasks.base import Measure, PostContext, Row, Task
from bert_export.models.tensors import BATCH, TensorSpec


def label_ids(dataset: Any, id2label: Mapping[str, str]) -> list[int]:
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


class SeqClsTask(Task):
    gold: ClassVar[str | None] = "label"
    pair_field: ClassVar[str | None] = "text_pair"

    def golden_examples(
        self, sentences: Sequence[str], pairs: Sequence[tuple[str, str]], mask_token: str | None
    ) -> list[dict[str, str]]:
        """The sentences alone, then text pairs (token types 0/1 checked by every consumer)."""
        return [{"text": s} for s in sentences] + [{"text": a, "text_pair": b} for a, b in pairs[:2]]

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        return pp.seq_cls_result(out["logits"], ctx.id2label)

    def _human_result(self, result: dict[str, Any]) -> list[str]:
        return [f"  {result['label']}  ({result['score']:.4f})"]

    def check_gold(self, dataset: Any, id2label: Mapping[str, str]) -> None:
        if dataset.gold == self.gold:
            label_ids(dataset, id2label)

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        return int(np.argmax(np.asarray(out["logits"], dtype=np.float32)))

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        gold, pred = label_ids(dataset, id2label), [values[k] for k in range(len(items))]
        return {
            "accuracy": m.accuracy(gold, pred),
            "macro_f1": m.macro_f1(gold, pred, sorted(int(k) for k in id2label)),
        }

    def shown_prediction(self, value: Any, id2label: Mapping[str, str]) -> Any:
        return str(id2label.get(str(value), value))

    def parity_measures(
        self,
        case: Any,
        ref: Mapping[str, np.ndarray],
        got: Mapping[str, np.ndarray],
        rows: Mapping[str, Any],
        pooling: str,
    ) -> list[Measure]:
        return [Measure.rate("argmax_agreement", ref["logits"].argmax(-1) == got["logits"].argmax(-1))]

    def head_flops(
        self, *, batch: int, tokens: int, hidden: int, labels: int, vocab: int, token_head: int, pooler: bool
    ) -> int:
        return 2 * batch * hidden * (hidden + labels)


SEQ_CLS = SeqClsTask(
    "seq-cls",
    "ForSequenceClassification",
    (TensorSpec("logits", "float32", (BATCH, "num_labels")),),
    metric="argmax",
    has_labels=True,
    description="sequence classification",
)
