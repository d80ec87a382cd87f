"""token-cls: token classification (NER), entities with character spans."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from bert_export.models import metrics as m
from bert_export.models import postprocess as pp
from bert_export.models.errors import BertExportError
from bert_export.models.tasks.base import Measure, PostContext, Row, Task, seq_out

NO_ENTITIES = {"label": "-", "text": "(no entities)", "score": 0.0, "start": 0, "end": 0}


def check_tags(dataset: Any, id2label: Mapping[str, str]) -> None:
    """token-cls gold tags must be the bundle's label names, or no entity can ever match."""
    known = {str(v) for v in id2label.values()}
    for i, ex in enumerate(dataset.examples):
        bad = [t for t in ex.labels or () if t not in known]
        if bad:
            raise BertExportError(
                f"--data {dataset.path} row {i + 1}: tag {bad[0]!r} is not one of this bundle's labels "
                f"({', '.join(sorted(known))})"
            )


class TokenClsTask(Task):
    offsets_field: ClassVar[str | None] = "text"
    gold: ClassVar[str | None] = "labels"

    def result(self, out: Mapping[str, np.ndarray], row: Row, ctx: PostContext) -> dict[str, Any]:
        return pp.token_cls_result(out["logits"], row.word_ids, row.offsets, row.text, ctx.id2label)

    def _human_result(self, result: dict[str, Any]) -> list[str]:
        return [
            f"  {e['label']:<10} {e['text']!r}  ({e['score']:.4f}, chars {e['start']}..{e['end']})"
            for e in result["entities"] or [NO_ENTITIES]
        ]

    def check_gold(self, dataset: Any, id2label: Mapping[str, str]) -> None:
        if dataset.gold == self.gold:
            check_tags(dataset, id2label)

    def metric_prediction(
        self, out: Mapping[str, np.ndarray], item: Any, example: Any, keep: np.ndarray, ctx: PostContext
    ) -> Any:
        """One tag per word: its first sub-token's argmax; words cut off by truncation get ``O``."""
        logits = np.asarray(out["logits"][: len(item.ids)], dtype=np.float32)
        words = len(example.words or [])
        tags = ["O"] * words
        seen: set[int] = set()
        for t, w in enumerate(item.word_ids[: len(logits)]):
            if w is None or w in seen or w >= words:
                continue
            seen.add(w)
            tags[w] = str(ctx.id2label.get(str(int(np.argmax(logits[t]))), "O"))
        return tags

    def score(
        self, dataset: Any, items: Sequence[Any], values: Mapping[int, Any], id2label: Mapping[str, str]
    ) -> dict[str, float]:
        f = m.entity_f1([e.labels or [] for e in dataset.examples], [values[k] for k in range(len(items))])
        return {"entity_f1": f["f1"], "entity_precision": f["precision"], "entity_recall": f["recall"]}

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
        return token_head + 2 * tokens * hidden * labels


TOKEN_CLS = TokenClsTask(
    "token-cls",
    "ForTokenClassification",
    (seq_out("logits", "num_labels"),),
    metric="argmax",
    has_labels=True,
    description="token classification (NER)",
)
